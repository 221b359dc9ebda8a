"""Benchmark: what wiping a Windows volume's unused space (after provisioning deleted its runner's files) does to
the image: allocated bytes of the raw, the qcow2 the publish would stage (the bytes on the wire where a cloud
converts), and the time the wipe takes, before and after, in the same run.

    python benchmarks/bench_wipe.py [--size-gib 8] [--deleted-mib 512]

Two disks: the synthetic Windows 10 disk as generated (the demo's), and the same disk after a provisioning-like
run wrote `--deleted-mib` of incompressible files on C: and deleted them (what installers' temporary files and
step logs leave: clusters no file owns any more, still full of data). No VM runs here; the wipe is the one
provisioning uses (ntfswipe --unused-fast through qemu-storage-daemon).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench_measure import reporting_load  # the benchmarks' shared helpers (their folder is on sys.path)

from pipeline.publish.staging import stage_qcow2
from pipeline.synthetic import windows_disk
from pipeline.windows.inspection import windows_volume, wipe_unused_space

GiB, MiB = 1024**3, 1024**2


def allocated(path: Path) -> int:
    return path.stat().st_blocks * 512


def staged_bytes(raw: Path, scratch: Path) -> int:
    qcow2 = scratch / "staged.qcow2"
    stage_qcow2(raw, qcow2)
    size = allocated(qcow2)
    qcow2.unlink()
    return size


def leave_deleted_files(disk: Path, scratch: Path, mib: int) -> None:
    with windows_volume(disk, "raw", scratch / "edit", writable=True) as found:
        folder = found.path("ProgramData/bakery-bench")
        folder.mkdir(parents=True)
        for index in range(max(1, mib // 64)):
            (folder / f"installer-{index}.tmp").write_bytes(os.urandom(64 * MiB))
        shutil.rmtree(folder)


def wiped(disk: Path, scratch: Path) -> float:
    with windows_volume(disk, "raw", scratch / "find", writable=False) as found:
        partition = found.partition
    start = time.perf_counter()
    wipe_unused_space(disk, "raw", partition, scratch / "wipe", label=str(disk))
    return time.perf_counter() - start


def report(name: str, disk: Path, scratch: Path) -> None:
    before = (allocated(disk), staged_bytes(disk, scratch))
    seconds = wiped(disk, scratch)
    after = (allocated(disk), staged_bytes(disk, scratch))
    print(f"{name}: raw allocated {before[0] / MiB:,.0f} -> {after[0] / MiB:,.0f} MiB ({after[0] / before[0]:.2f}x); "
          f"qcow2 staged {before[1] / MiB:,.0f} -> {after[1] / MiB:,.0f} MiB ({after[1] / before[1]:.2f}x); wipe {seconds:.1f} s",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=int, default=8)
    parser.add_argument("--deleted-mib", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wipe-", dir=os.environ.get("TMPDIR")) as scratch:
        scratch = Path(scratch)
        demo = windows_disk.generate(scratch / "demo.raw", "w10", size=args.size_gib * GiB)
        provisioned = scratch / "provisioned.raw"
        subprocess.run(["cp", "--sparse=always", demo, provisioned], check=True)
        leave_deleted_files(provisioned, scratch, args.deleted_mib)
        report("demo disk (as generated)", demo, scratch)
        report(f"after provisioning ({args.deleted_mib} MiB written and deleted)", provisioned, scratch)


if __name__ == "__main__":
    reporting_load(main)
