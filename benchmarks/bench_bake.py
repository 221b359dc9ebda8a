"""Benchmark: the offline virtio refresh of a 40 GiB-virtual fixture vs a bare `qemu-img convert` of it, and
vs virt-v2v, the reference tool for the same job.

The refresh converts too (its output is raw), so the first number is what it adds on top: mounting, driver
selection, the elements, writing the hives back, re-inspecting (target: at most ~5 s).

virt-v2v runs as `-i disk -o local -of raw` (it writes a converted copy, as the refresh does; it has no
in-place mode for a disk file) with the same virtio-win ISO, when it is installed. It needs nbdkit,
libnbd-bin and rhsrvany besides Debian's virt-v2v package, and the libguestfs appliance (a kernel in /boot).
A round that exits non-zero is reported as failed, with its last error line, never as a time; the ratio
is printed only when every round succeeded. Usage:
    python benchmarks/bench_bake.py [--size-gib 40] [--rounds 3] [--windows w10-oldvirtio] [--v2v-rounds 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench_measure import reporting_load, timed  # the benchmarks' shared helpers (their folder is on sys.path)

from pipeline.build.bake import refresh as bake
from pipeline.manifest import BakeSpec, Source
from pipeline.synthetic import virtio_iso, windows_disk
from pipeline.windows.drivers import DEFAULT_SELECTION

GiB = 1024**3
V2V_TIMEOUT = 3600


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--v2v-rounds", type=int, default=1, help="virt-v2v takes minutes under TCG")
    parser.add_argument("--windows", default="w10-oldvirtio", choices=sorted(windows_disk.RELEASES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bake-", dir=os.environ.get("BENCH_DIR")) as scratch:
        scratch = Path(scratch)
        source = windows_disk.generate(scratch / "golden.qcow2", args.windows, size=args.size_gib * GiB, fmt="qcow2")
        iso = virtio_iso.write_iso(scratch / "virtio-win.iso", "0.1.240")
        spec = BakeSpec(Source(str(iso), "0" * 64, None), DEFAULT_SELECTION, (), (), False)
        convert, refresh = [], []
        for round_ in range(args.rounds):
            target = scratch / "converted.raw"
            convert.append(timed(lambda: subprocess.run(
                ["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(source), str(target)], check=True)))
            target.unlink()
            workdir = scratch / f"bake{round_}"
            refresh.append(timed(lambda: bake.bake(spec, source, iso, workdir, build_epoch=0)))
            shutil.rmtree(workdir)
        base, ours = statistics.median(convert), statistics.median(refresh)
        print(f"fixture: {args.windows}, {args.size_gib} GiB virtual, {source.stat().st_size / 2**20:.0f} MiB qcow2; "
              f"median of {args.rounds} rounds")
        print(f"qemu-img convert qcow2->raw     {base:7.2f} s   (baseline)")
        print(f"offline refresh to a raw image  {ours:7.2f} s   {ours / base:5.2f}x the conversion, +{ours - base:.2f} s (target: <= +5 s)")
        compare_with_virt_v2v(source, iso, scratch, ours, args.v2v_rounds)


def compare_with_virt_v2v(source: Path, iso: Path, scratch: Path, ours: float, rounds: int) -> None:
    label = "virt-v2v -i disk -o local -of raw"
    if not shutil.which("virt-v2v"):
        print(f"{label:<31} not installed (apt-get install virt-v2v nbdkit libnbd-bin, plus rhsrvany) - no comparison")
        return
    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "VIRTIO_WIN": str(iso)}
    times = []
    for round_ in range(rounds):
        out = scratch / f"v2v{round_}"
        out.mkdir()
        start = time.perf_counter()
        try:
            done = subprocess.run(["virt-v2v", "-i", "disk", str(source), "-o", "local", "-os", str(out), "-of", "raw"],
                                  env=env, capture_output=True, timeout=V2V_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"{label:<31} FAILED in round {round_ + 1}: no result after {V2V_TIMEOUT} s")
            return
        elapsed = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        if done.returncode != 0:
            print(f"{label:<31} FAILED in round {round_ + 1} (exit {done.returncode} after {elapsed:.1f} s): {_last_error(done)}")
            return
        times.append(elapsed)
    v2v = statistics.median(times)
    print(f"{label:<31} {v2v:7.2f} s   median of {rounds}; the refresh is {v2v / ours:.1f}x faster")


def _last_error(done: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in (done.stderr or b"").decode(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]


if __name__ == "__main__":
    reporting_load(main)
