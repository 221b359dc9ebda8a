"""File digests, and a memo of the digests already computed for a file so an unchanged file is read once."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from pipeline.common.files import write_atomically

READ_CHUNK = 4 * 1024 * 1024


def sha256_file(path: Path, *, on_read: Callable[[int], None] | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            digest.update(chunk)
            if on_read:
                on_read(len(chunk))
    return digest.hexdigest()


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
        merged = {**self.get(path), **{k: v for k, v in digests.items() if v is not None}}
        write_atomically(self._entry(path), json.dumps(merged, sort_keys=True))
