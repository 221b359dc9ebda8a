"""Format-real synthetic inputs (Windows disks, virtio-win media) for tests, benchmarks and the demo.

Nothing here is Windows: every artefact carries a SYNTHETIC marker. They exist because real media cannot be
downloaded on the build machines, and they are real enough for the real tools (sfdisk, ntfs-3g, hivex, pycdlib).
"""
