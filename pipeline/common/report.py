"""What a command did, for people (a summary table) and for CI (`--json FILE`)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline import __version__
from pipeline.common.errors import for_terminal
from pipeline.common.files import write_atomically
from pipeline.common.secrets import redact


@dataclass
class Report:
    command: str
    ok: bool = False
    error: str | None = None
    pipeline_version: str = __version__
    target: dict | None = None
    manifest: dict | None = None
    build_id: str | None = None
    built: dict | None = None
    image: dict | None = None
    lint: list[dict] = field(default_factory=list)
    demoted: list[dict] = field(default_factory=list)
    cleaned_up: list[str] = field(default_factory=list)
    plan: dict | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # wall-clock bounds of the command (UTC), so that CI can tell which jobs overlapped
    started_at: str = field(default_factory=lambda: _now())
    finished_at: str | None = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.monotonic() - started, 3)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return redact(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str))

    def write(self, path: str | Path) -> None:
        self.finished_at = _now()
        write_atomically(Path(path), self.to_json() + "\n")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def print_summary(report: Report, console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title=f"{report.command}: {'ok' if report.ok else 'FAILED'}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(overflow="fold")

    def row(key: str, value: object) -> None:  # Text: a name from the server is shown as it is, never read as rich markup
        table.add_row(key, Text(for_terminal(value)))

    if report.target:
        row("target", report.target.get("description", ""))
    if report.manifest:
        row("manifest", f"{report.manifest.get('path')} (release {report.manifest.get('release_date')})")
    if report.image:
        image = report.image
        row("image", f"{image['name']} ({image['id']})")
        row("uploaded", "yes" if image.get("uploaded") else "no: identical verified image reused")
        row("checksum (md5)", image.get("checksum", ""))
        row("os_hash_value", (image.get("os_hash_value") or "")[:32] + "…")
        row("size / virtual", f"{image.get('size'):,} / {image.get('virtual_size') or 0:,} bytes")
        if (image.get("properties") or {}).get("bakery_canary"):
            row("canary", image["properties"]["bakery_canary"])
    if report.plan:
        for key, value in report.plan.get("summary", {}).items():
            row(key, str(value))
    if report.command != "plan" or report.demoted:
        row("demoted", ", ".join(f"{d['name']} ({d['id']})" for d in report.demoted) or "none")
    if report.cleaned_up:
        row("cleaned up", ", ".join(report.cleaned_up))
    for finding in report.lint:
        row(finding["severity"], f"[{finding['rule']}] {finding.get('property') or ''}: {finding['message']}")
    if report.error:
        row("error", report.error)
    if report.timings:
        row("timings", ", ".join(f"{k} {v:.1f}s" for k, v in report.timings.items()))
    console.print(table)
