"""The versions of what writes an image's bytes: a different tool version may write different bytes.

Stage ids and lock files include them, so a tool upgrade is a new build rather than a silent change.
"""

from __future__ import annotations

import functools
import hashlib
from importlib import metadata

from pipeline import __version__
from pipeline.common.errors import BakeryError
from pipeline.common.paths import PROJECT_ROOT
from pipeline.common.run import run

DEBIAN_PACKAGES = ("qemu-utils", "ntfs-3g", "libhivex0", "libfaketime", "qemu-system-x86", "ovmf")


@functools.cache
def tool_versions() -> dict[str, str]:
    """The versions of what writes the image's bytes; a different one may write different bytes."""
    versions = {"pipeline": __version__, "pipeline-source": _pipeline_source_sha256()}
    for package in DEBIAN_PACKAGES:
        versions[package] = _debian_version(package)
    for distribution in ("diskimage-builder", "pycdlib"):
        try:
            versions[distribution] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[distribution] = "absent"
    return versions


def _pipeline_source_sha256() -> str:
    digest = hashlib.sha256()
    for path in sorted((PROJECT_ROOT / "pipeline").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".sh"):
            digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _debian_version(package: str) -> str:
    try:
        proc = run(["dpkg-query", "-W", "-f=${Version}", package], check=False, timeout=30)
    except BakeryError:  # no dpkg-query, or it hung
        return "unknown"
    version = proc.stdout.decode().strip()
    return version if proc.returncode == 0 and version else "absent"
