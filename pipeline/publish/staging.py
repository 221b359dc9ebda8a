"""A qcow2 of the built raw image, written in the one pass that measures the raw.

For clouds whose import converts qcow2 to raw (Glance's image_conversion plugin), the bytes on the wire are
the qcow2: a 40 GiB raw with 12 GiB of data is a 12 GiB qcow2. The raw is read once, sequentially, its
holes skipped by SEEK_HOLE: every chunk feeds the md5/sha512 of the raw (the holes feed zeros) and each
64 KiB block that is not all zeros is written into the qcow2 through qemu's own qcow2 driver (the image
exposed as a raw file by qemu-storage-daemon). So the published image is proven to be the exact raw bytes
the bake produced, by the server's hashes after the import, without reading the raw twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from pipeline.common.digests import READ_CHUNK
from pipeline.common.run import run
from pipeline.diskimage.fuse import exposed
from pipeline.diskimage.info import check_qcow2
from pipeline.publish.measure import Measurement, ParallelHashes

BLOCK = 64 * 1024  # qcow2's default cluster: a block of zeros is never written, so the qcow2 stays sparse
ZEROS = bytes(READ_CHUNK)


def stage_qcow2(raw: Path, qcow2: Path, *, on_read: Callable[[int], None] = lambda n: None) -> Measurement:
    """Write `qcow2` from `raw` and return the raw's measurement (size, md5, sha512)."""
    size = raw.stat().st_size
    qcow2.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, str(size)], timeout=120)
    hashes = ParallelHashes()
    try:
        with exposed(qcow2, "qcow2", mountpoint=qcow2.with_name(qcow2.name + ".view"), writable=True) as view:
            source, target = os.open(raw, os.O_RDONLY), os.open(view, os.O_WRONLY)
            try:
                for start, end, data in _segments(source, size):
                    for offset in range(start, end, READ_CHUNK):
                        length = min(READ_CHUNK, end - offset)
                        chunk = os.pread(source, length, offset) if data else ZEROS[:length]
                        if len(chunk) != length:
                            raise OSError(f"{raw} shrank while it was staged")
                        hashes.update(chunk)
                        if data:
                            _write_blocks(target, chunk, offset)
                        on_read(length)
            finally:
                os.close(source)
                os.close(target)
    except BaseException:
        hashes.close()
        qcow2.unlink(missing_ok=True)
        raise
    measured = hashes.result()
    check_qcow2(qcow2)
    return measured


def _write_blocks(target: int, chunk: bytes, offset: int) -> None:
    for start in range(0, len(chunk), BLOCK):
        block = chunk[start:start + BLOCK]
        if block != ZEROS[:len(block)]:
            os.pwrite(target, block, offset + start)


def _segments(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_data) ranges covering the file, from SEEK_DATA/SEEK_HOLE (all data if unsupported)."""
    position = 0
    while position < size:
        try:
            data = os.lseek(fd, position, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole up to the end
            yield position, size, False
            return
        if data > position:
            yield position, data, False
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        yield data, min(hole, size), True
        position = hole
