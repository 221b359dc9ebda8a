"""Disk image files as files: format, virtual size, integrity (qemu-img).

Knows nothing of Windows, manifests or Glance; may import only pipeline.common.
"""
