"""Format-real synthetic inputs (Windows disks, virtio-win media) for tests, benchmarks and the demo.

Nothing here is Windows: every artefact carries a SYNTHETIC marker. They exist because real media cannot be
downloaded on the build machines, and they are real enough for the real tools (sfdisk, ntfs-3g, hivex, pycdlib).
Not part of the chain: may import pipeline.windows, pipeline.diskimage and pipeline.common.
"""

from __future__ import annotations

from pathlib import Path

GiB = 1024**3
DEFAULT_SIZE_GIB = 40


def generate(report, *, windows: str, out: Path, fmt: str, size_gib: int | str | None, iso: Path | None, iso_version: str) -> None:
    """`invoke synthetic`: a fixture disk (and optionally a virtio-win ISO), with their sha256 pins."""
    from pipeline.common.digests import sha256_file
    from pipeline.common.errors import BakeryError
    from pipeline.common.progress import say
    from pipeline.common.settings import whole_number
    from pipeline.diskimage.safety import DEFAULT_MAX_VIRTUAL_GIB
    from pipeline.synthetic import virtio_iso, windows_disk

    if windows not in windows_disk.RELEASES:
        raise BakeryError(f"--windows: expected one of {', '.join(windows_disk.RELEASES)}, got {windows!r}")
    if iso_version not in virtio_iso.RELEASES:
        raise BakeryError(f"--virtio-win-version: expected one of {', '.join(virtio_iso.RELEASES)}, got {iso_version!r}")
    if fmt not in ("raw", "qcow2"):
        raise BakeryError(f"--format: expected raw or qcow2, got {fmt!r}")
    size = whole_number(size_gib, "--size-gib", low=1, high=DEFAULT_MAX_VIRTUAL_GIB, default=DEFAULT_SIZE_GIB)
    windows_disk.generate(out, windows, size=size * GiB, fmt=fmt)
    report.details["disk"] = {"path": str(out), "windows": windows, "format": fmt, "sha256": sha256_file(out)}
    say(f"SYNTHETIC {windows} disk: {out} sha256 {report.details['disk']['sha256']}")
    if iso:
        virtio_iso.write_iso(iso, iso_version)
        report.details["virtio_win"] = {"path": str(iso), "version": iso_version, "sha256": sha256_file(iso)}
        say(f"SYNTHETIC virtio-win {iso_version}: {iso} sha256 {report.details['virtio_win']['sha256']}")
    report.ok = True
