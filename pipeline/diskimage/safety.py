"""The one gate every disk image passes before any tool reads it: sources, cached outputs, installed disks.

A disk image is untrusted input. A qcow2 header can name a backing file or an external data file anywhere
on this machine (qemu-img would read it into the published image), claim a virtual size of terabytes, or
hide another format; a raw file can be empty, a pipe, a device, or another format entirely. The checks are
Glance's and Nova's own: oslo.utils' format inspector (the code Glance 30+ runs on every upload), then
qemu-img with an explicit format and no backing chain, and the declared format against the detected one.
Every refusal is one line naming the input, what was found and why it is refused.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from oslo_utils.imageutils import format_inspector

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool, run
from pipeline.diskimage.info import GiB, ImageInfo, check_qcow2, qcow2_without_backing

ACCEPTED = ("raw", "qcow2")
# The inspector calls a disk with a boot-sector signature (MBR or GPT) "gpt": for us that is a raw disk.
RAW_ALIASES = {"raw": "raw", "gpt": "raw"}
SECTOR = 512
DEFAULT_MAX_VIRTUAL_GIB = 256  # Windows images are 20-128 GiB; a manifest raises it with image.max_virtual_gib


class UnsafeImage(BakeryError):
    """A disk image refused before any tool read it."""


@dataclass(frozen=True)
class CheckedImage:
    path: Path
    format: str  # raw | qcow2, as detected (and, when declared, as declared)
    virtual_size: int
    file_size: int

    @property
    def info(self) -> ImageInfo:
        return ImageInfo(self.format, self.virtual_size)


def qemu_img_input(checked: "CheckedImage") -> list[str]:
    """qemu-img arguments that read a gated image and nothing else: a raw file as raw (never probed), a qcow2
    checked intact and opened without the backing file its header may name."""
    if checked.format == "qcow2":
        check_qcow2(checked.path)
        return [qcow2_without_backing(checked.path)]
    return ["-f", "raw", str(checked.path)]


def check_image(path: Path, *, label: str, declared: str | None = None, max_virtual_size: int = DEFAULT_MAX_VIRTUAL_GIB * GiB,
                accepted: tuple[str, ...] = ACCEPTED) -> CheckedImage:
    """Refuse anything about `path` a tool would read beyond the file itself, or that is not what it claims.

    `label` is how the user knows this input (a manifest field and its path); it starts every refusal.
    """
    size = _regular_file_size(path, label)
    if size == 0:
        raise UnsafeImage(f"{label}: the file is empty (0 bytes): not a disk image")
    inspector = _inspect(path, label)
    detected = RAW_ALIASES.get(str(inspector), str(inspector))
    if detected not in accepted:
        raise UnsafeImage(f"{label}: the content is in {inspector} format; expected {' or '.join(accepted)}")
    if declared and declared != detected:
        raise UnsafeImage(f"{label}: declared format {declared}, but the content is {detected}"
                          f"{' (a ' + str(inspector) + ' header)' if detected != 'raw' else ''}: refused, the checksums would "
                          f"describe the wrong thing; fix the format or the file")
    _safety_check(inspector, label)
    # a raw disk is its own virtual size; the inspector only counts what it read to decide
    virtual_size = size if detected == "raw" else int(inspector.virtual_size)
    if detected == "raw" and size % SECTOR:
        raise UnsafeImage(f"{label}: a raw disk of {size:,} bytes is not a whole number of {SECTOR}-byte sectors: truncated or not a disk")
    if virtual_size > max_virtual_size:
        raise UnsafeImage(f"{label}: virtual size {virtual_size / GiB:,.1f} GiB exceeds the limit of {max_virtual_size / GiB:,.0f} GiB "
                          f"(image.max_virtual_gib): refused before anything is converted or uploaded")
    _qemu_agrees(path, label, detected, virtual_size)
    return CheckedImage(path, detected, virtual_size, size)


def _regular_file_size(path: Path, label: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UnsafeImage(f"{label}: no such file") from None
    except OSError as exc:
        raise UnsafeImage(f"{label}: cannot be read ({exc.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UnsafeImage(f"{label}: is a directory; expected a disk image file")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeImage(f"{label}: is not a regular file (a device, pipe or socket); expected a disk image file")
    return st.st_size


def _inspect(path: Path, label: str) -> format_inspector.FileInspector:
    try:
        inspector = format_inspector.detect_file_format(str(path))
    except format_inspector.ImageFormatError as exc:
        raise UnsafeImage(f"{label}: the format inspector refuses it: {exc}") from None
    except OSError as exc:
        raise UnsafeImage(f"{label}: cannot be read ({exc.strerror})") from None
    if inspector is None:
        raise UnsafeImage(f"{label}: the format inspector could not decide what format it is")
    return inspector


def _safety_check(inspector: format_inspector.FileInspector, label: str) -> None:
    try:
        inspector.safety_check()
    except format_inspector.SafetyCheckFailed as exc:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in sorted(exc.failures.items())) or str(exc)
        why = ("a disk image must be self-contained (a backing or data file would be read into the published image)"
               if {"backing_file", "data_file"} & set(exc.failures) else "it is what Glance's own format inspector refuses on upload")
        kind = "partitioned raw disk" if str(inspector) == "gpt" else f"{inspector} image"
        raise UnsafeImage(f"{label}: unsafe {kind} ({reasons}): refused, {why}") from None
    except format_inspector.ImageFormatError as exc:
        raise UnsafeImage(f"{label}: the {inspector} header cannot be checked ({exc})") from None


def _qemu_agrees(path: Path, label: str, fmt: str, virtual_size: int) -> None:
    """qemu-img with the format given (never probed) must see the same image and no chain of files."""
    require_tool("qemu-img", "qemu-utils")
    proc = run(["qemu-img", "info", "-f", fmt, "--output=json", path], check=False, timeout=120)
    if proc.returncode != 0:
        detail = (proc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise UnsafeImage(f"{label}: qemu-img cannot open it as {fmt}: {detail[-1] if detail else 'no detail'}")
    info = json.loads(proc.stdout)
    data_file = (info.get("format-specific", {}).get("data") or {}).get("data-file")
    if info.get("backing-filename") or info.get("full-backing-filename") or data_file:
        raise UnsafeImage(f"{label}: qemu-img sees a backing or data file: refused, a disk image must be self-contained")
    if int(info.get("virtual-size", -1)) != virtual_size:
        raise UnsafeImage(f"{label}: qemu-img reads a virtual size of {info.get('virtual-size')} bytes, the header says "
                          f"{virtual_size}: refused as inconsistent")
