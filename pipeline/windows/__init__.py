"""Everything known about a Windows disk offline: the NTFS volume (reached through FUSE), the registry
(hivex), the virtio driver catalogue, the virtio-win media reader, and the facts read from an image.

May import pipeline.common and pipeline.diskimage; knows nothing of manifests, builds or Glance.
"""
