"""The offline virtio refresh: mount the Windows volume, select the drivers, run the elements, check.

May import pipeline.manifest, pipeline.windows, pipeline.diskimage and pipeline.common.
"""
