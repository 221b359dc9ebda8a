"""Benchmark: bytes on the wire and time to a verified active image, direct raw upload vs glance-direct qcow2
staging, on a sparse raw image (default 40 GiB virtual with 2 GiB of data), against a real Keystone + Glance
with the import methods and the image_conversion plugin (the local test cloud), in the same run.

    python benchmarks/bench_import.py [--virtual-gib 40] [--data-gib 2]

Both routes end in the same verified raw image (the server's sha512 equals the bake's). The qcow2 route
reads the raw once (its holes skipped, hashed as zeros) and sends only the data; Glance converts it back.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

from bench_measure import reporting_load  # the benchmarks' shared helpers (their folder is on sys.path)

from pipeline.build.image import BuiltImage
from pipeline.common.digests import DigestMemo
from pipeline.diskimage.info import ImageInfo
from pipeline.glance.localcloud import LocalCloud
from pipeline.manifest import UploadSpec
from pipeline.properties.render import PropertySet
from pipeline.publish import methods
from pipeline.publish.journal import Journal
from pipeline.publish.upload import upload

GiB = 1024**3
CORE = {"disk_format": "raw", "container_format": "bare", "min_disk": 1, "min_ram": 0}


def sparse_image(path: Path, virtual: int, data: int) -> None:
    """`data` bytes of incompressible content spread in 64 MiB runs over a `virtual`-byte sparse file."""
    run = 64 * 1024 * 1024
    block = os.urandom(run)
    runs = max(1, data // run)
    stride = virtual // runs
    with open(path, "wb") as handle:
        for index in range(runs):
            handle.seek(index * stride)
            handle.write(block)
        handle.truncate(virtual)


def publish(target, path: Path, state: Path, spec: UploadSpec) -> tuple[float, int]:
    built = BuiltImage(path, ImageInfo("raw", path.stat().st_size), path, "0" * 64, temporary=False)
    props = PropertySet(properties={"os_type": "windows"}, core=dict(CORE), findings=())
    chosen = methods.route(target, spec)
    start = time.perf_counter()
    published = upload(target, "bench", built, props, visibility="private", tags=(), memo=DigestMemo(state / uuid.uuid4().hex),
                       journal=Journal(state / "journal", target), build_id=uuid.uuid4().hex, route=chosen)
    elapsed = time.perf_counter() - start
    target.glance.images.delete(published.id)
    return elapsed, published.sent_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--virtual-gib", type=float, default=40)
    parser.add_argument("--data-gib", type=float, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        virtual = int(args.virtual_gib * GiB)
        free = shutil.disk_usage(tmp).free
        if free < 1.2 * virtual:
            raise SystemExit(f"needs {1.2 * virtual / GiB:.0f} GiB free in {tmp} (Glance's file store writes every byte): "
                             f"{free / GiB:.0f} GiB free; use --virtual-gib or BENCH_DIR")
        image = tmp / "sparse.raw"
        sparse_image(image, virtual, int(args.data_gib * GiB))
        ports = [_free_port(), _free_port()]
        cloud = LocalCloud(tmp / "cloud", keystone_port=ports[0], glance_port=ports[1])
        cloud.up(timeout=180)
        try:
            os.environ["OS_CLIENT_CONFIG_FILE"] = str(cloud.clouds_yaml)
            from pipeline.glance.connect import connect

            target = connect("bakery-member")
            direct = publish(target, image, tmp, UploadSpec(method="direct", stage_format="raw"))
            staged = publish(target, image, tmp, UploadSpec(method="glance-direct", stage_format="qcow2"))
        finally:
            cloud.down()
    print(json.dumps({"virtual_gib": args.virtual_gib, "data_gib": args.data_gib, "direct": direct, "qcow2_staging": staged}))
    print(f"image: {args.virtual_gib:g} GiB virtual, {args.data_gib:g} GiB of data; local Keystone + Glance (image_conversion on)")
    print(f"direct raw upload      : {direct[0]:7.1f} s, {direct[1] / GiB:6.2f} GiB sent")
    print(f"glance-direct qcow2    : {staged[0]:7.1f} s, {staged[1] / GiB:6.2f} GiB sent")
    print(f"ratio (qcow2 / direct) : time {staged[0] / direct[0]:.2f}x, bytes {staged[1] / max(direct[1], 1):.3f}x")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    reporting_load(main)
