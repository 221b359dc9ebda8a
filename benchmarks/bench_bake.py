"""Benchmark: the offline virtio refresh of a 40 GiB-virtual fixture vs a bare `qemu-img convert` of it.

The refresh converts too (its output is raw), so the interesting number is what it adds on top: mounting,
driver selection, the elements, writing the hives back, re-inspecting (target: at most ~5 s). virt-v2v's
in-place Windows conversion is timed on the same fixture when it is installed. Usage:
    python benchmarks/bench_bake.py [--size-gib 40] [--rounds 3] [--windows w10-oldvirtio]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

from bench_measure import timed  # the benchmarks' one timer (run as scripts: their folder is on sys.path)

from pipeline.build.bake import refresh as bake
from pipeline.manifest import BakeSpec, Source
from pipeline.synthetic import virtio_iso, windows_disk
from pipeline.windows.drivers import DEFAULT_SELECTION

GiB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
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
        if shutil.which("virt-v2v"):
            v2v_out = scratch / "v2v"
            v2v_out.mkdir()
            env = {**os.environ, "LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg", "VIRTIO_WIN": str(iso)}
            v2v = timed(lambda: subprocess.run(
                ["virt-v2v", "-i", "disk", str(source), "-o", "local", "-os", str(v2v_out), "-of", "raw"],
                env=env, check=False, capture_output=True))
            print(f"virt-v2v -i disk -o local        {v2v:7.2f} s   the refresh is {v2v / ours:.1f}x faster")
        else:
            print("virt-v2v                          not installed (apt-get install virt-v2v to compare with the reference tool)")


if __name__ == "__main__":
    main()
