"""The embedded default's input: a generated, clearly synthetic base image (no Windows inside).

Deterministic (fixed disk identifier, fixed content), so its sha256 is the same on every machine.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pipeline.run import require_tool, run

DEMO_DISK_ID = "0x0ba4e001"
MARKER = b"SYNTHETIC DEMO IMAGE made by the image bakery - not Windows, not bootable\n"
MiB = 1024 * 1024
DEMO_MANIFEST = "manifests/demo-w10entx64.yaml"  # as recorded in bakery_manifest


def generate_base_image(path: Path, *, size_mib: int = 512) -> str:
    """A sparse raw disk: an MBR with one NTFS-type partition whose first sector names what it is."""
    require_tool("sfdisk", "fdisk")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with open(partial, "wb") as disk:
        disk.truncate(size_mib * MiB)
    layout = f"label: dos\nlabel-id: {DEMO_DISK_ID}\nunit: sectors\n\nstart=2048, type=7, bootable\n"
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", partial], input=layout.encode())
    with open(partial, "r+b") as disk:
        disk.seek(MiB)
        disk.write(MARKER)
    partial.replace(path)
    return sha256_of(path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def run_demo(report, *, months: tuple[str, str]) -> None:
    """Publish two monthly releases of the demo family to the local Glance; the first ends demoted."""
    from pipeline import job, release
    from pipeline.cloud import connect_local
    from pipeline.manifest import load_manifest
    from pipeline.paths import MANIFESTS, state_dir
    from pipeline.progress import say
    from pipeline.report import Report

    base = state_dir() / "demo" / "w10entx64-base.raw"
    sha256 = generate_base_image(base)
    say(f"generated synthetic demo base image {base} (sha256 {sha256[:16]}…)")
    manifest_path = MANIFESTS.parent / DEMO_MANIFEST
    variables = (f"base_image={base}", f"base_sha256={sha256}")
    target = connect_local()
    _forget_earlier_demo(target, load_manifest(manifest_path, release_date=months[0], variables=dict(v.split("=", 1) for v in variables)))
    runs = []
    for month in months:
        say(f"--- release {month} ---")
        run = Report(f"build-and-publish {month}")
        job.build_and_publish(job.JobOptions(manifest_path, release_date=month, variables=variables), run, target=target)
        runs.append(run)
    family = release.family_members(
        target, load_manifest(manifest_path, release_date=months[1], variables=dict(v.split("=", 1) for v in variables)), recommended_only=False
    )
    report.target = target.to_dict()
    report.image = runs[-1].image
    report.demoted = runs[-1].demoted
    report.details["releases"] = [r.to_dict() for r in runs]
    report.details["family"] = [
        {**m.to_dict(), "recommended": target.glance.images.get(m.id).get("recommended")} for m in family
    ]
    report.ok = True


def _forget_earlier_demo(target, manifest) -> None:
    """The demo starts from an empty family each time, so its outcome is the same on every run."""
    from pipeline import release
    from pipeline.progress import say

    for member in release.family_members(target, manifest, recommended_only=False):
        if target.glance.images.get(member.id).get("bakery_manifest") != DEMO_MANIFEST:
            continue  # not the demo's: leave it alone
        target.glance.images.delete(member.id)
        say(f"removed demo image of an earlier run: {member.name} ({member.id})")
