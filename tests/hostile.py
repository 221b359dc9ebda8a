"""Hostile and broken inputs for the corpus test: disk images, manifests and templates that try to make the
bakery read what it was not given. Each maker writes its files under a case directory and returns how the
CLI is run on them and which words the one error line must contain.

The canary is a string written into every file a hostile input points at; it must appear nowhere afterwards.
"""

from __future__ import annotations

import http.server
import os
import struct
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import MiB, make_image, with_overrides

CANARY = "CANARY-7f3c9e21-do-not-publish"
GiB = 1024**3
FAMILY = {"os_distro": "windows", "os_distro_major": "w10hostile", "os_edition": "DESKTOP", "architecture": "x86_64"}
ZERO_PIN = "0" * 64


@dataclass
class Setup:
    manifest: Path | None  # None: the args name everything
    expect: tuple[str, ...]  # fragments of the one error line (file, field, reason)
    args: tuple[str, ...] = ()  # extra CLI arguments
    secret: str | None = None  # must appear nowhere either
    command: str = "build-and-publish"
    cleanup: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Setup]


# -- files the hostile inputs point at ------------------------------------------------------------------------


def outside(root: Path) -> Path:
    """A folder next to the manifest's folder, holding only canaries."""
    folder = root / "outside"
    folder.mkdir(exist_ok=True)
    return folder


def canary_raw(root: Path, name: str = "canary.raw", size: int = MiB) -> Path:
    path = outside(root) / name
    data = (CANARY + "\n").encode() * (size // (len(CANARY) + 1))
    path.write_bytes(data.ljust(size, b"\0"))
    return path


def canary_text(root: Path, name: str = "canary.txt") -> Path:
    path = outside(root) / name
    path.write_text(f"name: {CANARY}\nos: {{type: windows, version: '10'}}\n")
    return path


def manifests(root: Path) -> Path:
    folder = root / "manifests"
    folder.mkdir(exist_ok=True)
    return folder


def good_raw(root: Path) -> tuple[Path, str]:
    return manifests(root) / "good.raw", make_image(manifests(root) / "good.raw", MiB, seed="hostile")


def document(source: dict | None = None, **overrides) -> dict:
    doc = {
        "name": "Windows 10 hostile [{{ release_date }}]",
        "family": dict(FAMILY),
        "os": {"type": "windows", "version": "10"},
        "source": source,
        "image": {"visibility": "private", "min_ram": 2048},
        "properties": {"hw_disk_bus": "virtio"},
    }
    return with_overrides(doc, overrides)


def write(root: Path, doc: dict | str, name: str = "manifest.yaml") -> Path:
    path = manifests(root) / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    return path


def with_good_source(root: Path, **overrides) -> Path:
    image, sha256 = good_raw(root)
    return write(root, document({"path": image.name, "sha256": sha256}, **overrides))


def text_manifest(root: Path, body: str) -> Path:
    """A manifest written as text (duplicates, aliases, tags), with a good source appended."""
    image, sha256 = good_raw(root)
    return write(root, body + f"\nsource: {{path: {image.name}, sha256: '{sha256}'}}\n")


BASE_TEXT = """name: "Windows 10 hostile"
family: {os_distro: windows, os_distro_major: w10hostile, os_edition: DESKTOP, architecture: x86_64}
os: {type: windows, version: "10"}
image: {visibility: private}
"""


# -- disk images ------------------------------------------------------------------------------------------------


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def image_case(make_disk: Callable[[Path], Path], *expect: str, fmt: str | None = None, max_gib: int | None = None) -> Callable[[Path], Setup]:
    def make(root: Path) -> Setup:
        disk = make_disk(root)
        source = {"path": os.path.relpath(disk, manifests(root)), "sha256": ZERO_PIN}
        if fmt:
            source["format"] = fmt
        image = {"visibility": "private", **({"max_virtual_gib": max_gib} if max_gib else {})}
        return Setup(write(root, document(source, image=image)), ("manifest.yaml", "source", *expect))

    return make


def qcow2_backing_absolute(root: Path) -> Path:
    disk = manifests(root) / "backed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(canary_raw(root)), "-F", "raw", str(disk), "1M")
    return disk


def qcow2_backing_relative(root: Path) -> Path:
    canary_raw(root)
    disk = manifests(root) / "relative.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", "../outside/canary.raw", "-F", "raw", str(disk), "1M")
    return disk


def qcow2_backing_json(root: Path) -> Path:
    spec = '{"driver": "raw", "file": {"driver": "file", "filename": "%s"}}' % canary_raw(root)
    disk = manifests(root) / "json.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", f"json:{spec}", "-F", "raw", str(disk), "1M")
    return disk


def qcow2_backing_qcow2_chain(root: Path) -> Path:
    middle = outside(root) / "middle.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(canary_raw(root)), "-F", "raw", str(middle), "1M")
    disk = manifests(root) / "chain.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", str(middle), "-F", "qcow2", str(disk), "1M")
    return disk


def qcow2_data_file(root: Path, raw_data: bool = False) -> Path:
    data = outside(root) / "data.raw"
    disk = manifests(root) / "datafile.qcow2"
    options = f"data_file={data}" + (",data_file_raw=on" if raw_data else "")
    qemu_img("create", "-q", "-f", "qcow2", "-o", options, str(disk), "1M")
    data.write_bytes(canary_raw(root, "data-canary.raw").read_bytes())  # creating the image wrote zeros there
    return disk


def plain_qcow2(root: Path, size: str = "16M", name: str = "plain.qcow2") -> Path:
    disk = manifests(root) / name
    qemu_img("create", "-q", "-f", "qcow2", str(disk), size)
    return disk


def other_format(fmt: str, *options: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        disk = manifests(root) / f"disk.{fmt}"
        qemu_img("create", "-q", "-f", fmt, *options, str(disk), "16M")
        return disk

    return make


def luks(root: Path) -> Path:
    disk = manifests(root) / "disk.luks"
    # qemu-img times its key derivation with the process's CPU clock and gives up ("Unable to get accurate CPU
    # usage") when a round measured 0 ms, which happens about one time in three on a fast machine whatever
    # iter-time says; each try is independent, so enough tries make the setup certain.
    attempts = 25
    for attempt in range(attempts):
        try:
            qemu_img("create", "-q", "--object", "secret,id=sec0,data=hostile", "-f", "luks", "-o", "key-secret=sec0,iter-time=10",
                     str(disk), "16M")
            return disk
        except subprocess.CalledProcessError as error:
            if b"accurate CPU usage" not in (error.stderr or b"") or attempt == attempts - 1:
                raise
    return disk


def iso(root: Path) -> Path:
    from pipeline.common.isomedia import write_iso

    return write_iso(manifests(root) / "media.iso", {"README.TXT": b"not a disk"}, label="NOTADISK")


def empty_raw(root: Path) -> Path:
    disk = manifests(root) / "empty.raw"
    disk.touch()
    return disk


def odd_raw(root: Path) -> Path:
    disk = manifests(root) / "odd.raw"
    disk.write_bytes(os.urandom(1000))
    return disk


def sparse_raw(size: int) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        disk = manifests(root) / "huge.raw"
        with open(disk, "wb") as handle:
            handle.truncate(size)
        return disk

    return make


def mbr(entries: list[tuple[int, int, tuple[int, int, int], int, int]]) -> bytes:
    """A boot sector with the given (boot flag, type, start CHS, start LBA, sectors) entries."""
    sector = bytearray(512)
    for index, (boot, kind, chs, start, count) in enumerate(entries):
        struct.pack_into("<B3BB3BII", sector, 446 + 16 * index, boot, *chs, kind, 0xFE, 0xFF, 0xFF, start, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def raw_with_boot_sector(sector: bytes, name: str) -> Callable[[Path], Path]:
    def make(root: Path) -> Path:
        disk = manifests(root) / name
        with open(disk, "wb") as handle:
            handle.write(sector)
            handle.truncate(16 * MiB)
        return disk

    return make


def qcow2_unknown_feature(root: Path) -> Path:
    disk = plain_qcow2(root, name="feature.qcow2")
    with open(disk, "r+b") as handle:
        handle.seek(72)  # incompatible_features (qcow2 v3), big-endian
        (features,) = struct.unpack(">Q", handle.read(8))
        handle.seek(72)
        handle.write(struct.pack(">Q", features | (1 << 60)))
    return disk


def directory_source(root: Path) -> Path:
    folder = manifests(root) / "adirectory.raw"
    folder.mkdir()
    return folder


def fifo_source(root: Path) -> Path:
    fifo = manifests(root) / "pipe.raw"
    os.mkfifo(fifo)
    return fifo


# -- a small HTTP server for URL sources ------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    mode = "404"

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.server.mode == "404":
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        zeros = bytes(MiB)
        try:
            while True:  # "endless": a disk bomb over the wire
                self.wfile.write(zeros)
        except OSError:
            return

    def log_message(self, *args):
        pass


def http_server(mode: str) -> tuple[str, Callable[[], None]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.mode = mode
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"127.0.0.1:{server.server_address[1]}", server.shutdown


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
