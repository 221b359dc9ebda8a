"""Writing state files so that a reader never sees half of one, and two writers never share a temporary name."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """A name next to `path` that no other process or thread will pick (pid and a random part)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}")


def write_atomically(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Write to a private temporary file, then rename it over `path`: readers see the old or the new file.
    durable: the bytes reach the disk (fsync) before the rename, for a record that must survive a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = temporary_sibling(path)
    try:
        with open(partial, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
