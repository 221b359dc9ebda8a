"""Progress for long work: a rich bar on a terminal, plain lines (every 10 % or 15 s) in CI logs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

from pipeline.common.errors import for_terminal

console = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)  # ":x:" in a name stays text
QUIET_S = 3.0


def say(message: str) -> None:
    """A status line for humans, on stderr so stdout stays clean for data."""
    console.print(for_terminal(message), markup=False)


@contextmanager
def progress(label: str, total: int | None, *, plain_every_s: float = 15.0) -> Iterator[Callable[[int], None]]:
    """total: the bytes expected, or None/0 when unknown (a download without Content-Length): then only bytes
    and speed are shown, never a percentage; nor past the total, when a source sends more than it declared."""
    label = for_terminal(label)
    total = total if total and total > 0 else None
    if console.is_terminal:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        ) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)
        return
    yield from _plain(label, total, plain_every_s)


def _plain(label: str, total: int | None, every_s: float) -> Iterator[Callable[[int], None]]:
    """Lines for CI logs; work that is over within QUIET_S prints none."""
    done = 0
    started = last_time = time.monotonic()
    last_decile = -1

    def advance(n: int) -> None:
        nonlocal done, last_time, last_decile
        done += n
        now = time.monotonic()
        known = total is not None and done <= total
        decile = int(10 * done / total) if known else last_decile
        if now - started < QUIET_S:
            return
        if decile > last_decile or now - last_time >= every_s:
            last_decile, last_time = decile, now
            print(plain_line(label, done, total, now - started), file=sys.stderr, flush=True)

    yield advance


def plain_line(label: str, done: int, total: int | None, elapsed_s: float) -> str:
    """`label: 512/1,024 MiB (50%) 171 MiB/s`, or `label: 515 MiB 171 MiB/s` when the total is unknown or passed."""
    rate = done / max(elapsed_s, 1e-6) / 2**20
    if total and done <= total:
        return f"{label}: {done / 2**20:,.0f}/{total / 2**20:,.0f} MiB ({100 * done / total:.0f}%) {rate:,.0f} MiB/s"
    return f"{label}: {done / 2**20:,.0f} MiB {rate:,.0f} MiB/s"
