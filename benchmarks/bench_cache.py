"""Benchmark: what the stage cache saves on the monthly run, against a cold build measured in the same run.

Four runs of build-and-publish of one manifest against a local Glance (a synthetic w10-oldvirtio disk and
a synthetic virtio-win): cold (bake + upload), the same run again (cache hit, already published: nothing
read, nothing uploaded), next month with unchanged inputs (cache hit, upload of the cached bytes as a new
release), and next month with --no-cache (bake + upload again). Usage:
    python benchmarks/bench_cache.py [--size-gib 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import yaml
from bench_measure import local_glance, reporting_load, timed  # the benchmarks' one timer (run as scripts: their folder is on sys.path)

from pipeline import chain
from pipeline.common.digests import sha256_file
from pipeline.common.report import Report
from pipeline.glance.connect import connect_local
from pipeline.synthetic import virtio_iso, windows_disk

GiB = 1024**3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cache-", dir=os.environ.get("BENCH_DIR")) as scratch:
        scratch = Path(scratch)
        os.environ["BAKERY_STATE_DIR"] = str(scratch / "state")
        disk = windows_disk.generate(scratch / "golden.qcow2", "w10-oldvirtio", size=int(args.size_gib * GiB), fmt="qcow2")
        iso = virtio_iso.write_iso(scratch / "virtio-win.iso", "0.1.240")
        manifest = scratch / "bench.yaml"
        manifest.write_text(yaml.safe_dump({
            "name": "bench [{{ release_date }}]", "os": {"type": "windows", "version": "10"},
            "family": {"os_distro": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP", "architecture": "x86_64"},
            "source": {"path": str(disk), "sha256": sha256_file(disk), "format": "qcow2"},
            "bake": {"virtio_win": {"path": str(iso), "sha256": sha256_file(iso)}},
            "image": {"visibility": "private"}, "properties": {"hw_disk_bus": "virtio"},
        }))
        with local_glance(scratch / "glance") as glance:
            target = connect_local(glance)

            def publish(date: str, **options) -> float:
                return timed(lambda: chain.build_and_publish(chain.JobOptions(manifest, release_date=date, **options),
                                                           Report("bench"), target=target))

            cold = publish("2026-10-01")
            rerun = publish("2026-10-01")
            next_month = publish("2026-11-01")
            uncached = publish("2026-12-01", use_cache=False)
        print(f"fixture: w10-oldvirtio, {args.size_gib:g} GiB virtual; local Glance on loopback")
        print(f"cold: bake + upload                        {cold:7.2f} s   (baseline)")
        print(f"same run again: cached, already published  {rerun:7.2f} s   {rerun / cold:5.2f}x")
        print(f"next month, unchanged inputs: cached bytes {next_month:7.2f} s   {next_month / cold:5.2f}x  (upload only)")
        print(f"next month with --no-cache                 {uncached:7.2f} s   {uncached / cold:5.2f}x")


if __name__ == "__main__":
    reporting_load(main)
