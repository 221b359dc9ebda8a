"""Build: from the manifest's pinned inputs to the raw image that gets published.

inputs (fetch and pin-check), install/ (Windows Setup under QEMU), bake/ (the offline virtio refresh and
its diskimage-builder elements), stage (bake or convert), image (what the build hands on).
May import pipeline.manifest, pipeline.windows, pipeline.diskimage and pipeline.common.
"""
