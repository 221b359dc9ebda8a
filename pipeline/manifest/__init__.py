"""The manifest: a family's release as Jinja-templated YAML, rendered in a sandbox and validated into data.

Owns rendering (render), validation (validate), the typed result (model) and loading (load). Every value is
checked against what Glance will accept before any build. It may import pipeline.common, the Windows driver
catalogue (pipeline.windows.drivers) and the disk image limits (pipeline.diskimage), nothing above.
"""

from pipeline.manifest.load import load_manifest, manifest_from_document, parse_release_date, parse_variables, today
from pipeline.manifest.model import (
    DEFAULT_FAMILY_KEYS,
    BakeSpec,
    CanarySpec,
    InstallSpec,
    LifecyclePolicy,
    Manifest,
    ProvisionSpec,
    ProvisionStep,
    ReleasePolicy,
    ScsProfile,
    SecretRef,
    Source,
    TargetSpec,
    UploadSpec,
)

__all__ = [
    "DEFAULT_FAMILY_KEYS", "BakeSpec", "CanarySpec", "InstallSpec", "Manifest", "LifecyclePolicy", "ProvisionSpec", "ProvisionStep",
    "ReleasePolicy", "ScsProfile", "SecretRef", "Source", "TargetSpec", "UploadSpec",
    "load_manifest", "manifest_from_document", "parse_release_date", "parse_variables", "today",
]
