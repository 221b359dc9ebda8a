"""The canary boot: before an image is uploaded, boot a throw-away overlay of it on the virtual machine its
own property set asks Nova for (hardware), and wait until it is ready (boot).

May import pipeline.properties (explain: the one derivation of the machine from the properties),
pipeline.build (the VM runner), pipeline.manifest and the layers below.
"""

from pipeline.canary.boot import CanaryFailed, CanaryResult, check, plan, run_canary
from pipeline.canary.hardware import Hardware

__all__ = ["CanaryFailed", "CanaryResult", "Hardware", "check", "plan", "run_canary"]
