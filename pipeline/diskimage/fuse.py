"""A disk image (or a byte window of it) as a plain raw file, through qemu-storage-daemon's FUSE export.

qemu's own format drivers do the reading and writing, so a qcow2 is as easy as a raw file, without root,
loop devices or device-mapper. The daemon is a child of ours, stopped in `finally` and waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool

MOUNT_WAIT_S = 10.0


@dataclass(frozen=True)
class Window:
    """A byte range of the image (a partition)."""

    start: int
    size: int


@contextlib.contextmanager
def exposed(image: Path, fmt: str, *, mountpoint: Path, window: Window | None = None, writable: bool = False) -> Iterator[Path]:
    """The image (or one partition of it) as a raw file at mountpoint, for as long as the block lasts."""
    require_tool("qemu-storage-daemon", "qemu-system-common")
    mountpoint.parent.mkdir(parents=True, exist_ok=True)
    mountpoint.touch()
    read_only = "off" if writable else "on"
    # Written zeros become holes in a raw (a wiped free cluster costs nothing), zero clusters in a qcow2 (whose
    # own file is left to qcow2: discards punched into it under a live qcow2 node damaged its refcounts).
    sparse = ",discard=unmap,detect-zeroes=unmap" if writable else ""
    nodes = [f"driver=file,node-name=file0,filename={qemu_path(image)},read-only={read_only}{sparse if fmt == 'raw' else ''}"]
    top = "file0"
    if fmt != "raw":
        # "backing": null (JSON only: the key=value syntax has no null): whatever the header names, no other
        # file is opened (the gate refused such images anyway)
        nodes.append(json.dumps({"driver": fmt, "node-name": "fmt0", "file": "file0", "read-only": not writable,
                                 **({"detect-zeroes": "on"} if writable else {}),
                                 **({"backing": None} if fmt == "qcow2" else {})}))
        top = "fmt0"
    if window is not None:
        nodes.append(f"driver=raw,node-name=win0,file={top},offset={window.start},size={window.size},read-only={read_only}{sparse}")
        top = "win0"
    argv = ["qemu-storage-daemon"]
    for node in nodes:
        argv += ["--blockdev", node]
    argv += ["--export", f"type=fuse,id=exp0,node-name={top},mountpoint={mountpoint},writable={'on' if writable else 'off'}"]
    daemon = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_mounted(mountpoint, daemon, "qemu-storage-daemon", image)
        yield mountpoint
    finally:
        stop(daemon, mountpoint, unmount_first=False)  # it unmounts its export on SIGTERM




def qemu_path(path: Path) -> str:
    if "," in str(path):
        raise BakeryError(f"{path}: a path with a comma cannot be handed to qemu-storage-daemon; rename it")
    return str(path.resolve())


def wait_mounted(mountpoint: Path, daemon: subprocess.Popen, what: str, subject) -> None:
    deadline = time.monotonic() + MOUNT_WAIT_S
    while not os.path.ismount(mountpoint):
        if daemon.poll() is not None:
            detail = _meaningful_line(daemon.stdout.read().decode(errors="replace")) or f"exit code {daemon.returncode}"
            raise BakeryError(f"{subject}: {what} could not open it: {detail}")
        if time.monotonic() > deadline:
            raise BakeryError(f"{subject}: {what} did not mount within {MOUNT_WAIT_S:.0f} s")
        time.sleep(0.01)


def _meaningful_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if any(word in line.lower() for word in ("error", "failed", "invalid", "corrupt", "not ", "unsupported")):
            return line
    return lines[-1] if lines else ""


def stop(daemon: subprocess.Popen, mountpoint: Path, *, unmount_first: bool) -> None:
    """End a FUSE daemon and wait for it: its exit, not the unmount, is when the data is flushed."""
    if unmount_first and os.path.ismount(mountpoint):
        _unmount(mountpoint)
    elif daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
    try:
        daemon.wait(timeout=30)
    except subprocess.TimeoutExpired:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    if os.path.ismount(mountpoint):  # a daemon that died without unmounting leaves a dead FUSE mount
        _unmount(mountpoint, lazy=True)


def _unmount(mountpoint: Path, *, lazy: bool = False) -> None:
    if os.geteuid() == 0:
        argv = ["umount", *(["-l"] if lazy else []), str(mountpoint)]
    else:
        argv = ["fusermount3", "-u", *(["-z"] if lazy else []), str(mountpoint)]
    subprocess.run(argv, capture_output=True)
