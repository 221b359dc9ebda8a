"""Reach the Windows NTFS volume inside a disk image, without root, loop devices or device-mapper.

qemu-storage-daemon exposes a byte window of the image (one partition, read through the image's format
driver, so qcow2 works as well as raw) as a plain file over FUSE; ntfs-3g then mounts that file. Both run
as child processes of ours, are stopped in `finally`, and are waited for: ntfs-3g flushes only when its
process exits, so the image is complete once these context managers return.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool, run
from pipeline.diskimage.fuse import stop, wait_mounted

SECTOR = 512
ESP_GPT = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
MSR_GPT = "E3C9E316-0B5C-4DB8-817D-F92DF00215AE"
BASIC_DATA_GPT = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
NTFS_MBR_TYPES = ("7", "07")
SYSTEM_HIVE = "Windows/System32/config/SYSTEM"


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str
    bootable: bool = False

    def to_dict(self) -> dict:
        return {"number": self.number, "start": self.start, "size": self.size, "type": self.type, "bootable": self.bootable}


@dataclass(frozen=True)
class Layout:
    label: str  # "dos" (MBR) or "gpt"
    partitions: tuple[Partition, ...]

    @property
    def has_esp(self) -> bool:
        return any(p.type.upper() == ESP_GPT or p.type.lower() == "ef" for p in self.partitions)

    @property
    def firmware(self) -> str:
        """What the disk can boot with: Windows boots from GPT only through UEFI, from MBR only through BIOS."""
        return "uefi" if self.label == "gpt" else "bios"

    def to_dict(self) -> dict:
        return {"label": self.label, "firmware": self.firmware, "esp": self.has_esp, "partitions": [p.to_dict() for p in self.partitions]}


def read_layout(disk: Path, *, image_size: int, label_for_errors: str) -> Layout:
    """The partition table of a raw disk view (a raw image, or an exposed whole qcow2)."""
    require_tool("sfdisk", "fdisk")
    proc = run(["sfdisk", "--json", disk], check=False)
    if proc.returncode != 0:
        raise BakeryError(f"{label_for_errors}: no partition table found (expected an MBR or GPT disk holding Windows)")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", SECTOR))
    partitions = []
    for entry in table.get("partitions", []):
        part = Partition(_node_number(entry["node"]), int(entry["start"]) * sector, int(entry["size"]) * sector, str(entry["type"]), bool(entry.get("bootable")))
        if part.start + part.size > image_size:
            raise BakeryError(
                f"{label_for_errors}: partition {part.number} ends at byte {part.start + part.size:,}, past the end of the "
                f"image ({image_size:,} bytes): the image is truncated"
            )
        partitions.append(part)
    if not partitions:
        raise BakeryError(f"{label_for_errors}: the partition table is empty (expected a Windows partition)")
    return Layout(table["label"], tuple(partitions))


def _node_number(node: str) -> int:
    digits = ""
    for char in reversed(node):
        if not char.isdigit():
            break
        digits = char + digits
    return int(digits)


# -- exposing a byte window of an image as a file ------------------------------------------------------------


@contextlib.contextmanager
def ntfs_mounted(volume_file: Path, mountpoint: Path, *, writable: bool, label_for_errors: str,
                 clock: int | None = None) -> Iterator[Path]:
    """An NTFS file system mounted with Windows' case-insensitive lookups; flushed when the block ends.

    With `clock` (a Unix time), ntfs-3g runs under libfaketime with its wall clock frozen there: every
    time it stamps (in $STANDARD_INFORMATION, in $FILE_NAME, in the parent's index) is that time, so two
    runs doing the same writes write the same bytes. Monotonic time stays real.
    """
    require_tool("lowntfs-3g", "ntfs-3g")
    env = None
    if clock is not None:
        if not FAKETIME.exists():
            raise BakeryError(f"{FAKETIME} missing: a reproducible bake freezes ntfs-3g's clock with it",
                              hint="install the Debian package libfaketime, or run `make deps`")
        frozen = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(clock))
        env = {**os.environ, "LD_PRELOAD": str(FAKETIME), "FAKETIME": frozen, "TZ": "UTC",
               "FAKETIME_DONT_FAKE_MONOTONIC": "1", "FAKETIME_DONT_RESET": "1"}
    mountpoint.mkdir(parents=True, exist_ok=True)
    # noatime: reading a file must not change the image (a bake is meant to be reproducible)
    options = "no_detach,ignore_case,windows_names,noatime" + ("" if writable else ",ro")
    if writable:
        options += ",remove_hiberfile"
    daemon = subprocess.Popen(
        ["lowntfs-3g", "-o", options, volume_file, mountpoint],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env,
    )
    try:
        wait_mounted(mountpoint, daemon, "ntfs-3g", label_for_errors)
        _no_symlink_following(mountpoint)
        yield mountpoint
    finally:
        stop(daemon, mountpoint, unmount_first=True)  # it flushes and exits once unmounted


def _no_symlink_following(mountpoint: Path) -> bool:
    """Have the kernel refuse to follow any symbolic link on the mount (nosymfollow, Linux 5.10+).

    An NTFS volume can hold links whose targets are host paths (/etc, /root/.ssh); ntfs-3g shows them as
    ordinary symlinks, and a bake running as root would read or write through them. Needs root; without it
    (or on an older kernel) the confined() checks on every path the bakery touches are the only guard."""
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-o", "remount,bind,nosymfollow", str(mountpoint)], capture_output=True)
    return proc.returncode == 0


class LinkInVolume(BakeryError):
    """A path the bakery reads or writes on a Windows volume passes through a symbolic link."""


def confined(root: Path, relative: str, *, label: str) -> Path:
    """root/relative (backslashes or slashes), refusing a symbolic link on any existing component.

    Real Windows volumes hold junctions (Documents and Settings, All Users); none is on a path the bakery
    uses, so a link there means a hostile or broken image, and following it could reach any host file."""
    path = root
    for part in relative.replace("\\", "/").split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise LinkInVolume(f"{label}: {relative!r} leaves the Windows volume")
        path = path / part
        if path.is_symlink():
            shown = path.relative_to(root).as_posix().replace("/", "\\")
            raise LinkInVolume(f"{label}: the Windows volume has a symbolic link at {shown} (-> {os.readlink(path)}): refused, "
                               "the bakery never follows a link out of an image")
    return path


FAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def is_ntfs(volume_file: Path) -> bool:
    with open(volume_file, "rb") as handle:
        return handle.read(11)[3:11] == b"NTFS    "
