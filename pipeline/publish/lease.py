"""Who is uploading an image, and whether they still are: the lease every unverified image carries.

An image the bakery has created but not verified carries `bakery_state=uploading`, `bakery_uploader` (host,
boot, pid and start time of the run) and `bakery_lease_until`. A sweep deletes such an image only when its
lease is over: at once when the uploader was on this machine and its process is gone, else when the lease
time has passed. So a run never deletes the image another live run is uploading, and a crashed run's image
is found again from the server alone, whatever the cloud is called and whether or not a journal survived.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

UPLOADER_KEY = "bakery_uploader"
LEASE_KEY = "bakery_lease_until"
BASE_LEASE = dt.timedelta(hours=1)
ASSUMED_RATE = 10 * 1024 * 1024  # bytes/s: a slow link; the lease covers an upload at this rate
_ACTIVE: set[str] = set()  # images this process is uploading right now (one process may run several publishes)
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def uploading(image_id: str) -> Iterator[None]:
    """Mark an image as this process's live upload for as long as the block runs."""
    with _ACTIVE_LOCK:
        _ACTIVE.add(image_id)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(image_id)


@dataclass(frozen=True)
class Uploader:
    host: str
    boot: str
    pid: int
    started: str  # the process's start time in clock ticks since boot (/proc/PID/stat): tells a reused pid apart

    def to_property(self) -> str:
        return f"{self.host} {self.boot} {self.pid} {self.started}"

    @classmethod
    def parse(cls, value: str | None) -> Uploader | None:
        try:
            host, boot, pid, started = (value or "").split(" ")
            return cls(host, boot, int(pid), started)
        except ValueError:
            return None

    def alive(self, image_id: str) -> bool | None:
        """True/False when the uploader ran on this machine since its last boot; None when that cannot be known."""
        if (self.host, self.boot) != (_host(), _boot_id()):
            return None
        if _start_ticks(self.pid) != self.started:
            return False
        if self.pid == os.getpid():  # this very process: alive only while it is uploading that image
            with _ACTIVE_LOCK:
                return image_id in _ACTIVE
        return True


def me() -> Uploader:
    return Uploader(_host(), _boot_id(), os.getpid(), _start_ticks(os.getpid()) or "?")


def lease_properties(size: int, *, now: dt.datetime | None = None) -> dict[str, str]:
    now = now or dt.datetime.now(dt.timezone.utc)
    until = now + BASE_LEASE + dt.timedelta(seconds=size / ASSUMED_RATE)
    return {UPLOADER_KEY: me().to_property(), LEASE_KEY: until.isoformat(timespec="seconds")}


@dataclass(frozen=True)
class LeaseState:
    expired: bool
    why: str


def lease_state(image: dict, *, now: dt.datetime | None = None) -> LeaseState:
    """Whether an unverified image may be cleaned up, and why."""
    now = now or dt.datetime.now(dt.timezone.utc)
    uploader = Uploader.parse(image.get(UPLOADER_KEY))
    alive = uploader.alive(image.get("id", "")) if uploader else None
    if alive is False:
        return LeaseState(True, f"its uploader (pid {uploader.pid} on this machine) is no longer uploading it")
    if alive:
        return LeaseState(False, f"pid {uploader.pid} on this machine is still uploading it")
    try:
        until = dt.datetime.fromisoformat(image.get(LEASE_KEY) or "")
    except ValueError:
        until = None
    if until is None:  # written by an older bakery: created_at plus the base lease
        try:
            until = dt.datetime.fromisoformat(str(image.get("created_at")).replace("Z", "+00:00")) + BASE_LEASE
        except ValueError:
            return LeaseState(True, "it carries no lease and no creation time")
    if until.tzinfo is None:
        until = until.replace(tzinfo=dt.timezone.utc)
    if now > until:
        return LeaseState(True, f"its lease ended at {until.isoformat(timespec='seconds')}")
    where = f" by {uploader.host}" if uploader else ""
    return LeaseState(False, f"leased{where} until {until.isoformat(timespec='seconds')}")


def _host() -> str:
    return socket.gethostname()


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:13]
    except OSError:
        return "unknown"


def _start_ticks(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] == "Z" or len(fields) <= 19:  # a zombie has exited already
        return None
    return fields[19]  # field 22 of stat (start time), counted after "pid (comm)"
