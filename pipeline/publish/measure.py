"""Measure: size, md5 (Glance's `checksum`) and sha512 (`os_hash_value`) from ONE pass over the image.

The pass is a file-like reader: the upload consumes it, so a multi-GB image is read once. Each chunk read
is handed to one thread per hash (hashlib releases the GIL on large buffers), so the pass runs at the speed
of the slowest hash and the reader returns at once: hashing overlaps with the network.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.digests import READ_CHUNK, DigestMemo
from pipeline.common.errors import BakeryError

QUEUE_DEPTH = 8  # chunks in flight per hash: bounds memory whatever the image size


@dataclass(frozen=True)
class Measurement:
    size: int
    md5: str
    sha512: str
    sha256: str | None = None  # only when asked for (source pins)

    def to_dict(self) -> dict:
        return asdict(self)


class _HashWorker(threading.Thread):
    def __init__(self, algorithm: str):
        super().__init__(name=f"hash-{algorithm}", daemon=True)
        self.hash = hashlib.new(algorithm)
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUE_DEPTH)

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.hash.update(chunk)


class ParallelHashes:
    """md5 and sha512 (and sha256 when asked) of a stream of chunks, one thread per hash."""

    def __init__(self, algorithms: tuple[str, ...] = ("md5", "sha512")):
        self._workers = [_HashWorker(a) for a in algorithms]
        for worker in self._workers:
            worker.start()
        self.size = 0
        self._closed = False

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        for worker in self._workers:
            worker.chunks.put(chunk)

    def result(self) -> Measurement:
        self.close()
        digests = {w.hash.name: w.hash.hexdigest() for w in self._workers}
        return Measurement(size=self.size, md5=digests["md5"], sha512=digests["sha512"], sha256=digests.get("sha256"))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            worker.chunks.put(None)
        for worker in self._workers:
            worker.join()


class HashingReader:
    """A read-only file object that measures what passes through it.

    `read()` returns the file's bytes unchanged; `result()` (after EOF) waits for the hash threads and
    returns the Measurement of exactly the bytes that were handed out.
    """

    def __init__(self, path: Path, *, algorithms: tuple[str, ...] = ("md5", "sha512"), on_read: Callable[[int], None] | None = None):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed in close()/result()
        self._hashes = ParallelHashes(algorithms)
        self._on_read = on_read
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        chunk = self._file.read(READ_CHUNK if n is None or n < 0 else n)
        if chunk:
            self._hashes.update(chunk)
            if self._on_read:
                self._on_read(len(chunk))
        else:
            self._eof = True
        return chunk

    def result(self) -> Measurement:
        if not self._eof:
            raise BakeryError(f"{self.path}: measurement asked for before the whole file was read ({self._hashes.size} bytes so far)")
        self.close()
        return self._hashes.result()

    def close(self) -> None:
        self._file.close()
        self._hashes.close()

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


def copy_measured(source: Path, destination: Path, *, on_read: Callable[[int], None] | None = None) -> Measurement:
    """Copy and measure in one read of the source; all-zero chunks become holes, as `cp --sparse=always` does."""
    with HashingReader(source, on_read=on_read) as reader, open(destination, "wb") as out:
        while chunk := reader.read(READ_CHUNK):
            if chunk.count(0) == len(chunk):
                out.seek(len(chunk), 1)
            else:
                out.write(chunk)
        out.truncate()
        return reader.result()


def remembered(memo: DigestMemo, path: Path) -> Measurement | None:
    """The measurement a memo holds for this very file, if it holds all of it."""
    known = memo.get(path)
    if {"size", "md5", "sha512"} <= known.keys():
        return Measurement(size=known["size"], md5=known["md5"], sha512=known["sha512"], sha256=known.get("sha256"))
    return None
