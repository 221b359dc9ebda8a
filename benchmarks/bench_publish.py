"""Benchmark: the pipeline's publish vs a plain glanceclient upload of the same file to the same server.

The baseline is what `glance image-create --file F` does (python-glanceclient: create, then stream the
file), with no hashing and no verification. The pipeline adds the hidden create, the parallel md5+sha512
of the streamed bytes, the server-side verification and the final update. Target: <= 1.1x the baseline.
Peak RSS of a child process that publishes images of two sizes shows whether memory stays flat.
    python benchmarks/bench_publish.py [--size-gib 1] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench_measure import local_glance, reporting_load  # the benchmarks' shared helpers (their folder is on sys.path)

from pipeline.build.image import BuiltImage
from pipeline.common.digests import DigestMemo
from pipeline.diskimage.info import ImageInfo
from pipeline.glance.connect import connect_local
from pipeline.properties.render import PropertySet
from pipeline.publish.journal import Journal
from pipeline.publish.upload import upload

GiB = 1024**3
CORE = {"disk_format": "raw", "container_format": "bare", "min_disk": 1, "min_ram": 0}


def make_file(path: Path, size: int) -> None:
    block = os.urandom(16 * 1024 * 1024)
    with open(path, "wb") as handle:
        for _ in range(max(1, size // len(block))):
            handle.write(block)


def baseline(target, path: Path) -> float:
    start = time.perf_counter()
    image = target.glance.images.create(name="baseline", **CORE)
    with open(path, "rb") as data:
        target.glance.images.upload(image["id"], data, image_size=path.stat().st_size)
    elapsed = time.perf_counter() - start
    target.glance.images.delete(image["id"])
    return elapsed


def pipeline_publish(target, path: Path, state: Path) -> float:
    built = BuiltImage(path, ImageInfo("raw", path.stat().st_size), path, "0" * 64, temporary=False)
    props = PropertySet(properties={"os_type": "windows", "recommended": "true"}, core=dict(CORE), findings=())
    start = time.perf_counter()
    published = upload(target, "pipeline", built, props, visibility="private", tags=(),
                       memo=DigestMemo(state / f"memo-{time.monotonic_ns()}"), journal=Journal(state / "journal", target),
                       build_id=uuid.uuid4().hex)
    elapsed = time.perf_counter() - start
    target.glance.images.delete(published.id)
    return elapsed


def child_peak_rss(port: int, root: Path, path: Path) -> int:
    """Publish in a fresh interpreter and return its peak RSS in MiB."""
    code = f"""
import sys, resource
from pathlib import Path
sys.path.insert(0, {str(Path(__file__).parent)!r})
from bench_publish import pipeline_publish
from pipeline.glance.connect import connect_local
from pipeline.glance.local import LocalGlance
target = connect_local(LocalGlance(root=Path({str(root)!r}), port={port}), project_id="bench")
pipeline_publish(target, Path({str(path)!r}), Path({str(root)!r}))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        with local_glance(tmp / "glance") as server:
            port = server.port
            target = connect_local(server, project_id="bench")
            big, small = tmp / "big.raw", tmp / "small.raw"
            make_file(big, int(args.size_gib * GiB))
            make_file(small, int(args.size_gib * GiB) // 4)
            base, ours = [], []
            for _ in range(args.rounds):
                base.append(baseline(target, big))
                ours.append(pipeline_publish(target, big, tmp))
            rss_small = child_peak_rss(port, server.root, small)
            rss_big = child_peak_rss(port, server.root, big)
    size_mib = args.size_gib * 1024
    b, o = min(base), min(ours)
    print(json.dumps({"size_mib": size_mib, "baseline_s": base, "pipeline_s": ours}))
    print(f"file: {size_mib:,.0f} MiB, best of {args.rounds}, same local Glance (gunicorn 1x1, sqlite, file store)")
    print(f"glanceclient create+upload : {b:6.2f} s  ({size_mib / b:,.0f} MiB/s)")
    print(f"pipeline publish (verified): {o:6.2f} s  ({size_mib / o:,.0f} MiB/s)")
    print(f"ratio (pipeline / baseline): {o / b:.2f}x  (target <= 1.1x)")
    print(f"peak RSS of a publishing process: {rss_small} MiB for {size_mib / 4:,.0f} MiB, {rss_big} MiB for {size_mib:,.0f} MiB "
          f"(target: flat, < 150 MiB)")


if __name__ == "__main__":
    reporting_load(main)
