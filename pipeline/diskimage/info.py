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


def image_info(path: Path) -> ImageInfo:
    """Format and virtual size, as qemu-img sees them (it is what Nova and Glance use too)."""
    require_tool("qemu-img", "qemu-utils")
    proc = run(["qemu-img", "info", "--output=json", path])
    try:
        info = json.loads(proc.stdout)
        return ImageInfo(format=info["format"], virtual_size=int(info["virtual-size"]))
    except (ValueError, KeyError) as exc:
        raise BakeryError(f"{path}: qemu-img info gave no usable format/virtual-size ({exc})") from None


def check_qcow2(image: Path) -> None:
    """qemu reads clusters past a truncated file's end as zeros: only `qemu-img check` notices."""
    proc = run(["qemu-img", "check", "-q", "--output=json", image], check=False, timeout=3600)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or b"").decode(errors="replace").strip().splitlines()
        raise BakeryError(f"{image}: qemu-img check found a damaged qcow2 image (exit {proc.returncode}): {detail[-1] if detail else 'no detail'}")
    end = json.loads(proc.stdout or b"{}").get("image-end-offset")
    if end is not None and end > image.stat().st_size:
        raise BakeryError(f"{image}: the qcow2 image ends at byte {end:,} but the file has {image.stat().st_size:,}: it is truncated")
