"""Benchmark: one-pass md5+sha512 (pipeline.measure) vs `md5sum FILE && sha512sum FILE`.

Prints ratios measured in the same run (target: >= 1.6x faster). Usage:
    python benchmarks/bench_measure.py [--size-gib 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.glance.local import LocalGlance
from pipeline.publish.measure import measure_file

GiB = 1024**3


@contextlib.contextmanager
def local_glance(root: Path) -> Iterator[LocalGlance]:
    """A real Glance on a free loopback port for one benchmark, stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = LocalGlance(root=root, port=port)
    server.up(timeout=120)
    try:
        yield server
    finally:
        server.down()


def make_file(path: Path, size: int) -> None:
    """Incompressible content written once; later reads come from the page cache for both sides."""
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        for _ in range(size // len(block)):
            handle.write(block)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages: a ratio measured on a busy machine says so next to it."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} cpus)"


def reporting_load(main) -> None:
    """Run a benchmark's main() between two load-average lines (every benchmark does)."""
    print(f"load average at start: {loadavg()}", flush=True)
    try:
        main()
    finally:
        print(f"load average at end: {loadavg()}", flush=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        path = Path(tmp) / "image.raw"
        make_file(path, int(args.size_gib * GiB))
        baseline_cmd = ["sh", "-c", 'md5sum "$1" >/dev/null && sha512sum "$1" >/dev/null', "sh", str(path)]
        baseline, ours = [], []
        for _ in range(args.rounds):  # interleaved, so drift on a noisy VM hits both sides alike
            baseline.append(timed(lambda: subprocess.run(baseline_cmd, check=True)))
            ours.append(timed(lambda: measure_file(path)))
        size_mib = path.stat().st_size / 2**20
    b, o = min(baseline), min(ours)
    print(f"file: {size_mib:,.0f} MiB, best of {args.rounds}")
    print(f"md5sum && sha512sum : {b:6.2f} s  ({size_mib / b:,.0f} MiB/s)")
    print(f"pipeline one pass   : {o:6.2f} s  ({size_mib / o:,.0f} MiB/s)")
    print(f"ratio (baseline / one pass): {b / o:.2f}x  (target >= 1.6x)")


if __name__ == "__main__":
    reporting_load(main)
