"""What qemu-img says about a disk image file: its format, virtual size, and whether a qcow2 is intact."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool, run

GiB = 1024**3


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int

    @property
    def min_disk_gib(self) -> int:
        return max(1, math.ceil(self.virtual_size / GiB))


def image_info(path: Path, *, fmt: str | None = None) -> ImageInfo:
    """Format and virtual size, as qemu-img sees them (it is what Nova and Glance use too).

    Only for files of ours or files the gate (safety.check_image) has accepted: with no `fmt`, qemu-img
    probes the format. Give `fmt` whenever it is known."""
    require_tool("qemu-img", "qemu-utils")
    proc = run(["qemu-img", "info", *(["-f", fmt] if fmt else []), "--output=json", path])
    try:
        info = json.loads(proc.stdout)
        return ImageInfo(format=info["format"], virtual_size=int(info["virtual-size"]))
    except (ValueError, KeyError) as exc:
        raise BakeryError(f"{path}: qemu-img info gave no usable format/virtual-size ({exc})") from None


def qcow2_without_backing(image: Path) -> str:
    """A qcow2 file as a qemu filename that never opens a backing file, whatever its header says."""
    return "json:" + json.dumps({"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": str(image.resolve())}})


def check_qcow2(image: Path) -> None:
    """qemu reads clusters past a truncated file's end as zeros: only `qemu-img check` notices."""
    proc = run(["qemu-img", "check", "-q", "--output=json", image], check=False, timeout=3600)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip().splitlines()
        raise BakeryError(f"{image}: qemu-img check found a damaged qcow2 image (exit {proc.returncode}): {detail[-1] if detail else 'no detail'}")
    end = json.loads(proc.stdout or b"{}").get("image-end-offset")
    if end is not None and end > image.stat().st_size:
        raise BakeryError(f"{image}: the qcow2 image ends at byte {end:,} but the file has {image.stat().st_size:,}: it is truncated")
