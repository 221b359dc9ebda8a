"""The stage cache: a stage's output stored under its id, the sha256 of everything that determines it.

Entries live in `<cache>/<stage>/<id>/`: the output files and `entry.json` (what the stage recorded:
facts, measurements, sizes, when it was made and last used). Lookups check that every file is there with
its recorded size; a broken entry is dropped and the stage runs again. Whether the bytes are still right
is checked where they are read anyway: the upload stream's digests must equal the recorded measurement,
or the partial image is deleted, the entry dropped and the stage rebuilt (job.py). The cache has a size
limit and evicts the least recently used entries beyond it (`BAKERY_CACHE_MAX_GIB`, default 100).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.files import temporary_sibling, write_atomically
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.settings import decimal, directory_setting

ENTRY = "entry.json"
DEFAULT_MAX_GIB = 100.0
MAX_GIB = 1024 * 1024  # a PiB: a larger limit is a typo


def cache_dir() -> Path:
    return directory_setting("BAKERY_CACHE_DIR", state_dir() / "cache")


def max_bytes() -> int:
    return gib_limit(os.environ.get("BAKERY_CACHE_MAX_GIB", DEFAULT_MAX_GIB), "BAKERY_CACHE_MAX_GIB")


def gib_limit(value: object, name: str) -> int:
    """A cache size limit in GiB (fractions allowed), as bytes."""
    return int(decimal(value, name, low=0, high=MAX_GIB, unit="GiB") * 2**30)


@dataclass(frozen=True)
class Entry:
    stage: str
    id: str
    path: Path
    record: dict  # whatever the stage stored: facts, measurement, ...

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def disk_bytes(self) -> int:
        return sum(p.stat().st_blocks * 512 for p in self.path.iterdir() if p.is_file())

    @property
    def last_used(self) -> float:
        return (self.path / ENTRY).stat().st_mtime

    def to_dict(self) -> dict:
        return {
            "stage": self.stage, "id": self.id, "path": str(self.path), "bytes": self.disk_bytes,
            "created": self.record.get("created"),
            "last_used": dt.datetime.fromtimestamp(self.last_used, dt.timezone.utc).isoformat(timespec="seconds"),
            "files": sorted(self.record.get("files", {})),
        }


class StageCache:
    def __init__(self, root: Path | None = None, limit: int | None = None):
        self.root = root or cache_dir()
        self.limit = max_bytes() if limit is None else limit

    def get(self, stage: str, stage_id: str) -> Entry | None:
        """The entry, marked as just used; None (and a broken entry dropped) when it cannot be used."""
        path = self.root / stage / stage_id
        if not path.is_dir():
            return None
        try:
            record = json.loads((path / ENTRY).read_text())
            for name, size in record["files"].items():
                if (path / name).stat().st_size != size:
                    raise ValueError(f"{name} has changed size")
        except (OSError, ValueError, KeyError) as exc:
            say(f"cache: dropping the broken {stage} entry {stage_id[:12]} ({exc}); the stage runs again")
            self.drop(stage, stage_id)
            return None
        os.utime(path / ENTRY)  # least recently used is by this time
        return Entry(stage, stage_id, path, record)

    def put(self, stage: str, stage_id: str, files: dict[str, Path], record: dict) -> Entry:
        """Move `files` (name -> path of ours) into a new entry; atomic: a half-written entry is never seen."""
        final = self.root / stage / stage_id
        partial = temporary_sibling(final, ".part")
        partial.mkdir(parents=True)
        sizes = {}
        for name, source in files.items():
            shutil.move(source, partial / name)
            sizes[name] = (partial / name).stat().st_size
        full = {**record, "stage": stage, "id": stage_id, "files": sizes,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        (partial / ENTRY).write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.rename(final)
        except OSError:  # another run put the same stage id first: content-addressed, so theirs is as good
            existing = self.get(stage, stage_id)  # (a broken one is dropped by get)
            if existing:
                shutil.rmtree(partial, ignore_errors=True)
                return existing
            partial.rename(final)
        entry = Entry(stage, stage_id, final, full)
        self.evict(keep=entry)
        return entry

    def update(self, entry: Entry, **record) -> Entry:
        merged = {**entry.record, **record}
        write_atomically(entry.path / ENTRY, json.dumps(merged, indent=2, sort_keys=True, default=str) + "\n")
        return Entry(entry.stage, entry.id, entry.path, merged)

    def drop(self, stage: str, stage_id: str) -> None:
        shutil.rmtree(self.root / stage / stage_id, ignore_errors=True)

    def entries(self) -> list[Entry]:
        found = []
        if not self.root.is_dir():
            return found
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(p for p in stage_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                try:
                    found.append(Entry(stage_dir.name, path.name, path, json.loads((path / ENTRY).read_text())))
                except (OSError, ValueError):
                    found.append(Entry(stage_dir.name, path.name, path, {"broken": True}))
        return found

    def evict(self, *, limit: int | None = None, keep: Entry | None = None) -> list[Entry]:
        """Remove broken entries, then the least recently used ones until the cache fits its limit."""
        limit = self.limit if limit is None else limit
        entries = self.entries()
        removed = [e for e in entries if e.record.get("broken")]
        entries = sorted((e for e in entries if not e.record.get("broken")), key=lambda e: e.last_used)
        total = sum(e.disk_bytes for e in entries)
        for entry in entries:
            if total <= limit:
                break
            if keep and entry.path == keep.path:
                continue
            total -= entry.disk_bytes
            removed.append(entry)
        for entry in removed:
            shutil.rmtree(entry.path, ignore_errors=True)
        if removed:
            say(f"cache: evicted {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} to stay within "
                f"{limit / 2**30:.1f} GiB: {', '.join(f'{e.stage}/{e.id[:12]}' for e in removed)}")
        return removed


def list_entries(report) -> None:
    cache = StageCache()
    report.details["cache"] = {"root": str(cache.root), "limit_bytes": cache.limit,
                               "entries": [e.to_dict() for e in sorted(cache.entries(), key=lambda e: -e.last_used)]}
    report.ok = True


def collect(report, *, limit: int | None) -> None:
    cache = StageCache()
    removed = cache.evict(limit=limit)
    report.details["evicted"] = [f"{e.stage}/{e.id}" for e in removed]
    list_entries(report)
