"""Stage 3: size, md5 (Glance's `checksum`) and sha512 (`os_hash_value`) from ONE pass over the image.

The pass is a file-like reader: the upload consumes it, so a multi-GB image is read once. Each chunk read
is handed to one thread per hash (hashlib releases the GIL on large buffers), so the pass runs at the speed
of the slowest hash and the reader returns at once: hashing overlaps with the network.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import BakeryError
from pipeline.run import require_tool, run

GiB = 1024**3
READ_CHUNK = 4 * 1024 * 1024
QUEUE_DEPTH = 8  # chunks in flight per hash: bounds memory whatever the image size


@dataclass(frozen=True)
class Measurement:
    size: int
    md5: str
    sha512: str
    sha256: str | None = None  # only when asked for (source pins)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageInfo:
    format: str
    virtual_size: int

    @property
    def min_disk_gib(self) -> int:
        return max(1, math.ceil(self.virtual_size / GiB))


class _HashWorker(threading.Thread):
    def __init__(self, algorithm: str):
        super().__init__(name=f"hash-{algorithm}", daemon=True)
        self.hash = hashlib.new(algorithm)
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.hash.update(chunk)


class HashingReader:
    """A read-only file object that measures what passes through it.

    `read()` returns the file's bytes unchanged; `result()` (after EOF) waits for the hash threads and
    returns the Measurement of exactly the bytes that were handed out.
    """

    def __init__(self, path: Path, *, algorithms: tuple[str, ...] = ("md5", "sha512"), on_read: Callable[[int], None] | None = None):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()/result()
        self._workers = [_HashWorker(a) for a in algorithms]
        for worker in self._workers:
            worker.start()
        self._size = 0
        self._on_read = on_read
        self._eof = False
        self._closed = False

    def read(self, n: int = -1) -> bytes:
        chunk = self._file.read(READ_CHUNK if n is None or n < 0 else n)
        if chunk:
            self._size += len(chunk)
            for worker in self._workers:
                worker.chunks.put(chunk)
            if self._on_read:
                self._on_read(len(chunk))
        else:
            self._eof = True
        return chunk

    def result(self) -> Measurement:
        if not self._eof:
            raise BakeryError(f"{self.path}: measurement asked for before the whole file was read ({self._size} bytes so far)")
        self._stop_workers()
        digests = {w.hash.name: w.hash.hexdigest() for w in self._workers}
        return Measurement(size=self._size, md5=digests["md5"], sha512=digests["sha512"], sha256=digests.get("sha256"))

    def close(self) -> None:
        self._stop_workers()

    def _stop_workers(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._file.close()
        for worker in self._workers:
            worker.chunks.put(None)
        for worker in self._workers:
            worker.join()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def measure_file(path: Path, *, with_sha256: bool = False, on_read: Callable[[int], None] | None = None) -> Measurement:
    algorithms = ("md5", "sha512", "sha256") if with_sha256 else ("md5", "sha512")
    with HashingReader(path, algorithms=algorithms, on_read=on_read) as reader:
        while reader.read(READ_CHUNK):
            pass
        return reader.result()


def sha256_file(path: Path, *, on_read: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            if on_read:
                on_read(len(chunk))
    return digest.hexdigest()


def image_info(path: Path) -> ImageInfo:
    """Format and virtual size, as qemu-img sees them (it is what Nova and Glance use too)."""
    require_tool("qemu-img", "qemu-utils")
    proc = run(["qemu-img", "info", "--output=json", path])
    try:
        info = json.loads(proc.stdout)
        return ImageInfo(format=info["format"], virtual_size=int(info["virtual-size"]))
    except (ValueError, KeyError) as exc:
        raise BakeryError(f"{path}: qemu-img info gave no usable format/virtual-size ({exc})") from None


class DigestMemo:
    """Digests already computed for a file, keyed by its identity (device, inode, size, mtime, ctime).

    ctime cannot be set back by a user, so any write to the file invalidates its entry. This saves the
    monthly re-run from re-reading an unchanged multi-GB image just to learn what it already knew.
    """

    def __init__(self, directory: Path):
        self.directory = directory

    def _entry(self, path: Path) -> Path:
        st = os.stat(path)
        key = f"{os.path.realpath(path)}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
        return self.directory / (hashlib.sha256(key.encode()).hexdigest() + ".json")

    def get(self, path: Path) -> dict:
        try:
            return json.loads(self._entry(path).read_text())
        except (OSError, ValueError):
            return {}

    def put(self, path: Path, **digests: str | int) -> None:
        entry = self._entry(path)
        entry.parent.mkdir(parents=True, exist_ok=True)
        merged = {**self.get(path), **{k: v for k, v in digests.items() if v is not None}}
        tmp = entry.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, sort_keys=True))
        tmp.replace(entry)

    def measurement(self, path: Path) -> Measurement | None:
        known = self.get(path)
        if {"size", "md5", "sha512"} <= known.keys():
            return Measurement(size=known["size"], md5=known["md5"], sha512=known["sha512"], sha256=known.get("sha256"))
        return None
