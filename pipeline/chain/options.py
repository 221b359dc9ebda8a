"""The options every entry point of the chain takes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class JobOptions:
    manifest: Path
    cloud: str | None = None  # one cloud; `clouds` for several (--cloud A --cloud B)
    release_date: str | None = None
    variables: tuple[str, ...] = ()
    allow_older: bool = False
    use_cache: bool = True
    lock: Path | None = None  # default: the manifest's .lock file when there is one
    clouds: tuple[str, ...] = ()

    @property
    def cloud_names(self) -> tuple[str, ...]:
        return self.clouds or ((self.cloud,) if self.cloud else ())
