"""Writing small ISO 9660 + Joliet images (config media, synthetic virtio-win) with pycdlib.

Windows reads the Joliet names, so those carry the real file names; the ISO 9660 names only have to be
valid and unique.
"""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib

from pipeline.common.files import temporary_sibling


def write_iso(destination: Path, files: dict[str, bytes | Path], *, label: str, long_label: str | None = None) -> Path:
    """files maps slash-separated paths to contents, or to a file whose bytes are streamed when the image is
    written (installers can be gigabytes); written atomically (a .part file renamed)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, vol_ident=label)
    if long_label:
        iso.pvd.volume_identifier = long_label.ljust(32).encode()  # Joliet caps the label at 16 characters
    made: set[str] = set()
    for name, data in sorted(files.items()):
        parts = name.strip("/").split("/")
        for depth in range(1, len(parts)):
            directory = "/" + "/".join(parts[:depth])
            if directory not in made:
                iso.add_directory(_iso9660(directory), joliet_path=directory)
                made.add(directory)
        joliet_path = "/" + "/".join(parts)
        if isinstance(data, Path):
            iso.add_file(str(data), _iso9660(joliet_path, file=True), joliet_path=joliet_path)
        else:
            iso.add_fp(io.BytesIO(data), len(data), _iso9660(joliet_path, file=True), joliet_path=joliet_path)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(destination, ".part")
    try:
        iso.write(str(partial))
    finally:
        iso.close()
    partial.replace(destination)
    return destination


def _iso9660(joliet_path: str, *, file: bool = False) -> str:
    parts = joliet_path.strip("/").split("/")
    names = []
    for index, part in enumerate(parts):
        name = part.upper().replace("-", "_")
        if file and index == len(parts) - 1:
            stem, _, ext = name.rpartition(".")
            name = f"{stem.replace('.', '_')}.{ext};1" if stem else f"{ext};1"
        else:
            name = name.replace(".", "_")
        names.append(name)
    return "/" + "/".join(names)
