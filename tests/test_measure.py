"""The one-pass measurement equals independent hashes, over real files and real qemu-img."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError
from pipeline.diskimage.info import image_info
from pipeline.publish.measure import HashingReader, measure_file
from tests.conftest import MiB, make_image


def reference(path):
    data = path.read_bytes()
    return len(data), hashlib.md5(data).hexdigest(), hashlib.sha512(data).hexdigest(), hashlib.sha256(data).hexdigest()


def test_measure_file_matches_hashlib(tmp_path):
    path = tmp_path / "disk.raw"
    make_image(path, 9 * MiB + 12345, seed="m", sparse_tail=3 * MiB)
    size, md5, sha512, sha256 = reference(path)
    measured = measure_file(path, with_sha256=True)
    assert (measured.size, measured.md5, measured.sha512, measured.sha256) == (size, md5, sha512, sha256)


def test_reader_returns_the_bytes_it_measures_for_any_read_size(tmp_path):
    path = tmp_path / "disk.raw"
    make_image(path, 3 * MiB + 7, seed="r")
    seen = bytearray()
    progress = []
    with HashingReader(path, on_read=progress.append) as reader:
        for n in (1, 4095, 65536, 1048576, 3, 10 * MiB):
            seen += reader.read(n)
        while chunk := reader.read(777777):
            seen += chunk
        result = reader.result()
    assert bytes(seen) == path.read_bytes()
    assert sum(progress) == len(seen) == result.size
    assert result.md5 == hashlib.md5(seen).hexdigest()


def test_empty_file(tmp_path):
    path = tmp_path / "empty.raw"
    path.write_bytes(b"")
    assert measure_file(path).md5 == hashlib.md5(b"").hexdigest()


def test_result_before_eof_is_refused(tmp_path):
    path = tmp_path / "disk.raw"
    make_image(path, 2 * MiB)
    with HashingReader(path) as reader:
        reader.read(1024)
        with pytest.raises(BakeryError, match="before the whole file was read"):
            reader.result()


def test_image_info_raw_and_qcow2(tmp_path):
    raw = tmp_path / "disk.raw"
    make_image(raw, MiB)
    os.truncate(raw, 3 * 1024**3)
    info = image_info(raw)
    assert (info.format, info.virtual_size, info.min_disk_gib) == ("raw", 3 * 1024**3, 3)
    qcow2 = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow2, "5G"], check=True)
    info = image_info(qcow2)
    assert (info.format, info.virtual_size, info.min_disk_gib) == ("qcow2", 5 * 1024**3, 5)


def test_min_disk_rounds_up(tmp_path):
    raw = tmp_path / "disk.raw"
    make_image(raw, MiB)
    os.truncate(raw, 1024**3 + MiB)
    assert image_info(raw).min_disk_gib == 2


def test_image_info_of_garbage_is_one_line(tmp_path):
    with pytest.raises(BakeryError) as caught:
        image_info(tmp_path / "missing.raw")
    assert "\n" not in caught.value.one_line()


def test_memo_is_invalidated_by_any_write(tmp_path):
    path = tmp_path / "disk.raw"
    make_image(path, MiB)
    memo = DigestMemo(tmp_path / "memo")
    memo.put(path, sha256="x" * 64)
    assert memo.get(path)["sha256"] == "x" * 64
    stat = path.stat()
    with open(path, "r+b") as handle:
        handle.write(b"changed")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime put back: ctime still moves
    assert memo.get(path) == {}
