"""The embedded default's inputs: a generated, clearly SYNTHETIC Windows 10 disk and virtio-win ISO.

The disk is format-real (MBR, NTFS, regf hives saying Windows 10 Enterprise 22H2, last year's virtio
drivers installed) so the demo runs the real bake: inspection, driver selection, the elements, and the
property checks against what the image carries. It also carries the stand-in "Windows" boot path (a Debian
kernel and busybox behind GRUB, standin_windows.py), so the canary boots it as it would boot Windows.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.common.digests import sha256_file
from pipeline.synthetic import virtio_iso, windows_disk

DEMO_MANIFEST = "manifests/demo-w10entx64.yaml"  # as recorded in bakery_manifest
DEMO_WINDOWS = "w10-oldvirtio"
DEMO_VIRTIO_WIN = "0.1.240"
DEMO_SIZE = 1024**3  # small: the demo uploads it twice to the local Glance


def generate_inputs(directory: Path) -> dict[str, str]:
    """The demo manifest's variables: the base image (qcow2, like a golden image) and the ISO, pinned."""
    base = windows_disk.generate(directory / "w10entx64-golden.qcow2", DEMO_WINDOWS, size=DEMO_SIZE, fmt="qcow2",
                                 bootable_with=directory / "kernel")
    iso = virtio_iso.write_iso(directory / f"virtio-win-{DEMO_VIRTIO_WIN}.iso", DEMO_VIRTIO_WIN)
    return {"base_image": str(base), "base_sha256": sha256_file(base), "virtio_win_iso": str(iso), "virtio_win_sha256": sha256_file(iso)}


def run_demo(report, *, months: tuple[str, str]) -> None:
    """Publish two monthly releases of the demo family to the local Glance; the first ends demoted; then the newer
    one's release notes and the family's page (.bakery/release-notes/)."""
    from pipeline import chain
    from pipeline.common.paths import MANIFESTS, state_dir
    from pipeline.common.progress import say
    from pipeline.common.report import Report
    from pipeline.glance.connect import connect_local
    from pipeline.manifest import load_manifest
    from pipeline.publish import release

    inputs = generate_inputs(state_dir() / "demo")
    say(f"generated SYNTHETIC inputs: {inputs['base_image']} (Windows 10 22H2 with virtio-win 0.1.173 drivers) "
        f"and {inputs['virtio_win_iso']}")
    manifest_path = MANIFESTS.parent / DEMO_MANIFEST
    variables = tuple(f"{k}={v}" for k, v in inputs.items())
    target = connect_local()
    _forget_earlier_demo(target, load_manifest(manifest_path, release_date=months[0], variables=inputs))
    runs = []
    for month in months:
        say(f"--- release {month} ---")
        run = Report(f"build-and-publish {month}")
        chain.build_and_publish(chain.JobOptions(manifest_path, release_date=month, variables=variables), run, target=target)
        runs.append(run)
    family = release.family_members(target, load_manifest(manifest_path, release_date=months[1], variables=inputs), recommended_only=False)
    report.target = target.to_dict()
    report.image = runs[-1].image
    report.demoted = runs[-1].demoted
    report.details["releases"] = [r.to_dict() for r in runs]
    report.details["family"] = [
        {**m.to_dict(), "recommended": target.glance.images.get(m.id).get("recommended")} for m in family
    ]
    notes = chain.release_notes(Report("release-notes"), out=state_dir() / "release-notes", image_id=runs[-1].image["id"], target=target)
    report.details["release_notes"] = {k: notes.details["release_notes"][k] for k in ("folder", "family_page")}
    report.ok = True


def _forget_earlier_demo(target, manifest) -> None:
    """The demo starts from an empty family each time, so its outcome is the same on every run."""
    from pipeline.common.progress import say
    from pipeline.publish import release

    for member in release.family_members(target, manifest, recommended_only=False):
        if target.glance.images.get(member.id).get("bakery_manifest") != DEMO_MANIFEST:
            continue  # not the demo's: leave it alone
        target.glance.images.delete(member.id)
        say(f"removed demo image of an earlier run: {member.name} ({member.id})")
