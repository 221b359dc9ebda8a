"""Install from media: the answer file and config media (unattend), the QEMU runner (vm), and the stage
that runs Windows Setup to the guest's power-off (windows_setup).

May import pipeline.manifest, pipeline.windows and pipeline.common.
"""
