"""Rebuild a release from its provenance, and say whether it came out bit for bit the same.

`--image ID` reads the image's `bakery_lock_sha256` and finds that lock (the local lock store, else git
at `bakery_manifest_commit`); `--lock FILE` starts from the lock itself and compares with the images
published from it. The build runs without the stage cache (a cached output would prove nothing), with the
lock verified first, so inputs and tools are the locked ones. When the bytes differ, the published image is
streamed and compared with the rebuilt one, and the report lists where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.build.image import discard
from pipeline.common.errors import BakeryError
from pipeline.common.progress import progress, say
from pipeline.common.report import Report
from pipeline.common.settings import exactly_one
from pipeline.glance.connect import Target, connect
from pipeline.glance.images import fetch_image, stream
from pipeline.publish.measure import measure_file
from pipeline.repro import lock as lockfile
from pipeline.repro import runner
from pipeline.repro.stages import StageIds, stage_ids
from pipeline.windows import volume

MAX_RANGES = 16


@dataclass(frozen=True)
class Published:
    id: str
    md5: str
    sha512: str
    size: int
    build_stage: str | None

    @classmethod
    def of(cls, image: dict) -> "Published":
        return cls(image["id"], image.get("checksum") or "", image.get("os_hash_value") or "", int(image.get("size") or 0),
                   image.get("bakery_build_stage"))


def rebuild(report: Report, *, image_id: str | None = None, lock_file: Path | None = None, cloud: str | None = None,
            target: Target | None = None) -> Report:
    exactly_one("rebuild", image=image_id, lock=lock_file)
    target = target or connect(cloud)
    report.target = target.to_dict()
    if image_id:
        image = fetch_image(target, image_id)
        if not image.get("bakery_lock_sha256"):
            raise BakeryError(f"image {image_id} records no bakery_lock_sha256: it was not built from a lock file",
                              hint="build with a lock (`invoke lock`) to make a release rebuildable")
        lock = lockfile.find(image["bakery_lock_sha256"], manifest=image.get("bakery_manifest"),
                             commit=image.get("bakery_manifest_commit"))
        published = [Published.of(image)]
    else:
        lock = lockfile.load(Path(lock_file))
        published = [Published.of(dict(i)) for i in target.glance.images.list(filters={"bakery_lock_sha256": lock.sha256})]
    manifest = lockfile.manifest_of(lock)
    lockfile.verify(manifest, lock)
    say(f"rebuild {manifest.name} from lock {lock.sha256[:12]} ({lock.path})")
    stages = stage_ids(manifest)
    image = runner.build_uncached(manifest, stages, report)
    try:
        with progress(f"measure {image.path.name}", image.path.stat().st_size) as advance:
            rebuilt = measure_file(image.path, on_read=advance)
        result = {"lock": {"path": str(lock.path), "sha256": lock.sha256}, "build_stage": stages.build,
                  "rebuilt": {"size": rebuilt.size, "md5": rebuilt.md5, "sha512": rebuilt.sha512}, "compared": []}
        report.details["rebuild"] = result
        for release in published:
            same = (release.size, release.md5, release.sha512) == (rebuilt.size, rebuilt.md5, rebuilt.sha512)
            comparison = {"image": release.id, "reproduced": same,
                          "build_stage_matches": release.build_stage in (None, stages.build)}
            if not same:
                comparison["differences"] = differences(target, release.id, image.path)
            result["compared"].append(comparison)
        report.ok = True
        _conclude(result, stages)
        return report
    finally:
        discard(image)


def _conclude(result: dict, stages: StageIds) -> None:
    if not result["compared"]:
        say(f"rebuilt: sha512 {result['rebuilt']['sha512'][:16]}...; no published image of this lock to compare with")
        return
    failed = [c for c in result["compared"] if not c["reproduced"]]
    for comparison in result["compared"]:
        if comparison["reproduced"]:
            say(f"bit-for-bit reproduced: {comparison['image']} (sha512 {result['rebuilt']['sha512'][:16]}...)")
    if failed:
        first = failed[0]
        where = "; ".join(d["where"] for d in first["differences"][:3])
        stage = "install (Windows Setup is not reproducible)" if stages.install else "build (bake/convert)"
        inputs = "" if first["build_stage_matches"] else "; the build stage's inputs differ too"
        raise BakeryError(f"not reproduced: image {first['image']} differs from the rebuild in the {stage} stage's output"
                          f" ({len(first['differences'])} range(s): {where}){inputs}")


def differences(target: Target, image_id: str, rebuilt: Path) -> list[dict]:
    """Where the published bytes and the rebuilt ones differ: byte ranges, and the partition holding each."""
    layout = _layout(rebuilt)
    ranges: list[list[int]] = []
    offset = 0
    with open(rebuilt, "rb") as local:
        for chunk in stream(target, image_id):
            mine = local.read(len(chunk))
            if mine != chunk:
                _record(ranges, offset, chunk, mine)
            offset += len(chunk)
            if len(ranges) >= MAX_RANGES:
                break
    return [{"offset": start, "length": end - start, "where": _where(layout, start)} for start, end in ranges]


def _record(ranges: list[list[int]], offset: int, theirs: bytes, mine: bytes) -> None:
    for index in range(min(len(theirs), len(mine))):
        if theirs[index] != mine[index]:
            position = offset + index
            if ranges and position <= ranges[-1][1] + 512:
                ranges[-1][1] = position + 1
            else:
                ranges.append([position, position + 1])


def _layout(image: Path):
    try:
        return volume.read_layout(image, image_size=image.stat().st_size, label_for_errors=str(image))
    except BakeryError:
        return None


def _where(layout, offset: int) -> str:
    for partition in layout.partitions if layout else ():
        if partition.start <= offset < partition.start + partition.size:
            return f"byte {offset} (partition {partition.number}, +{offset - partition.start})"
    return f"byte {offset} (outside the partitions)"
