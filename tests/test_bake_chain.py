"""The bake inside build-and-publish, against the local Glance; and the inputs it must refuse in one line."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pipeline import chain
from pipeline.common.errors import BakeryError, LintFailed, ManifestError
from pipeline.common.report import Report
from pipeline.common.run import run
from pipeline.diskimage import fuse
from pipeline.windows import volume
from pipeline.windows.inspection import inspect_image
from tests.conftest import project_images, write_manifest
from tests.test_cli import assert_one_line_error, invoke

FAMILY = {"os_distro_major": "w10entx64"}


def bake_manifest(tmp_path, media, generation="w10-oldvirtio", iso_version="0.1.240", **overrides):
    disk, disk_sha = media.disk(generation, "qcow2")
    iso, iso_sha = media.iso(iso_version)
    document = {
        "source": {"path": str(disk), "sha256": disk_sha, "format": "qcow2"},
        "bake": {"virtio_win": {"path": str(iso), "sha256": iso_sha}},
        "properties": {"hw_disk_bus": "virtio", "hw_vif_model": "virtio", "hw_qemu_guest_agent": "yes", "hw_firmware_type": "bios"},
        **overrides,
    }
    return write_manifest(tmp_path, disk, disk_sha, **document)


def publish(manifest, target, date):
    return chain.build_and_publish(chain.JobOptions(manifest, release_date=date), Report("t"), target=target)


def test_fixture_baked_published_and_previous_demoted(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media)
    first = publish(manifest, target, "2026-10-01")
    second = publish(manifest, target, "2026-11-01")
    props = second.image["properties"]
    assert props["bakery_virtio_win_version"] == "0.1.240" and props["bakery_windows_build"] == "19045"
    assert props["hw_firmware_type"] == "bios" and props["os_type"] == "windows" and props["recommended"] == "true"
    assert second.built["facts"]["drivers"]["viostor"]["bootable"]
    assert [d["id"] for d in second.demoted] == [first.image["id"]]
    assert target.glance.images.get(first.image["id"])["recommended"] == "false"
    assert not any((tmp_path.parent).glob("**/work/*/image.raw")), "work files outlived the publish"


def test_a_desktop_manifest_on_a_server_disk_is_refused(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media, generation="2k19", properties={"hw_disk_bus": "virtio", "hw_firmware_type": "uefi"})
    with pytest.raises(LintFailed) as failure:
        publish(manifest, target, "2026-11-01")
    rules = {f.rule for f in failure.value.findings if f.severity == "error"}
    assert "version-matches-image" in rules
    assert "Windows Server 2019" in failure.value.one_line() or any("Server 2019" in f.message for f in failure.value.findings)
    assert project_images(target) == []


def test_firmware_contradicting_the_disk_is_refused(media, target, tmp_path):
    manifest = bake_manifest(tmp_path, media, generation="w10", properties={"hw_disk_bus": "virtio", "hw_firmware_type": "uefi"})
    with pytest.raises(LintFailed) as failure:
        publish(manifest, target, "2026-11-01")
    assert "firmware-matches-disk" in {f.rule for f in failure.value.findings}
    assert project_images(target) == []


def test_iso_with_the_wrong_pin_is_refused(media, target, tmp_path):
    iso, _ = media.iso("0.1.240")
    manifest = bake_manifest(tmp_path, media, bake={"virtio_win": {"path": str(iso), "sha256": "c" * 64}})
    with pytest.raises(ManifestError) as failure:
        publish(manifest, target, "2026-11-01")
    assert "bake.virtio_win.sha256: pin mismatch" in failure.value.one_line()
    assert project_images(target) == []


def test_a_site_element_runs_and_a_failing_one_stops_everything(media, target, tmp_path):
    site = site_element(tmp_path, "site-motd", "70-motd", 'echo "baked by site" > "$BAKERY_WINDOWS_ROOT/Windows/motd.txt"')
    good = site / "site-motd" / "install.d"
    manifest = bake_manifest(tmp_path, media, bake={**yaml_bake(media), "elements": ["site-motd"], "elements_path": [str(site)]})
    report = publish(manifest, target, "2026-11-01")
    assert "site-motd" in report.built["bake"]["elements"]

    (good / "70-motd").write_text("#!/bin/bash\necho 'motd: cannot write the banner' >&2\nexit 3\n")
    with pytest.raises(BakeryError) as failure:
        publish(manifest, target, "2026-12-01")
    message = failure.value.one_line()
    assert "element phase install.d failed: script 70-motd exited with 3: motd: cannot write the banner" in message
    log = message.rsplit("(log: ", 1)[1].rstrip(")")
    assert "cannot write the banner" in open(log).read()  # the log survives the removed work directory
    assert len(project_images(target)) == 1  # the failed month published nothing and demoted nothing
    assert target.glance.images.get(report.image["id"])["recommended"] == "true"


def site_element(tmp_path, name: str, script: str, body: str):
    """A site element directory (under tmp_path/site-elements) with one install.d bash script."""
    site = tmp_path / "site-elements"
    phase = site / name / "install.d"
    phase.mkdir(parents=True)
    (site / name / "element-deps").write_text("windows-base\n")
    (phase / script).write_text(f"#!/bin/bash\nset -eu\n{body}\n")
    (phase / script).chmod(0o755)
    return site


def yaml_bake(media):
    iso, iso_sha = media.iso("0.1.240")
    return {"virtio_win": {"path": str(iso), "sha256": iso_sha}}


# -- inputs that are not what they claim ------------------------------------------------------------------


def test_truncated_raw_image(media, tmp_path):
    disk, _ = media.disk("w10")
    truncated = tmp_path / "truncated.raw"
    with open(disk, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(64 * 1024 * 1024))
    with pytest.raises(BakeryError) as failure:
        inspect_image(truncated)
    assert "the image is truncated" in failure.value.one_line()


def test_truncated_qcow2_image(media, tmp_path, session_state, glance_server):
    disk, _ = media.disk("w10", "qcow2")
    truncated = tmp_path / "truncated.qcow2"
    truncated.write_bytes(disk.read_bytes()[: disk.stat().st_size // 2])
    proc = invoke("inspect", str(truncated), state=session_state, port=glance_server.port)
    assert_one_line_error(proc, str(truncated))


def test_disk_without_windows(tmp_path, media):
    plain = tmp_path / "plain.raw"
    with open(plain, "wb") as disk:
        disk.truncate(256 * 1024 * 1024)
    with pytest.raises(BakeryError, match="no partition table"):
        inspect_image(plain)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", plain], input=b"label: dos\nstart=2048, type=83\n")
    with pytest.raises(BakeryError, match="no NTFS partition among 1: not a Windows disk"):
        inspect_image(plain)


def test_missing_hive(media, tmp_path):
    disk, _ = media.disk("2k22")
    broken = tmp_path / "nohive.raw"
    shutil.copyfile(disk, broken)
    layout = volume.read_layout(broken, image_size=broken.stat().st_size, label_for_errors="t")
    windows = layout.partitions[-1]
    with fuse.exposed(broken, "raw", mountpoint=tmp_path / "part", window=windows, writable=True) as part:
        with volume.ntfs_mounted(part, tmp_path / "mnt", writable=True, label_for_errors="t") as root:
            (root / "Windows/System32/config/SOFTWARE").unlink()
    with pytest.raises(BakeryError, match=r"has no Windows/System32/config/SOFTWARE hive"):
        inspect_image(broken)


def test_inspect_cli_table_and_json(media, tmp_path, session_state, glance_server):
    disk, _ = media.disk("2k19", "qcow2")
    report = tmp_path / "facts.json"
    proc = invoke("inspect", str(disk), "--json", str(report), state=session_state, port=glance_server.port)
    assert proc.returncode == 0, proc.stderr
    assert "Windows Server 2019 Standard" in proc.stdout and "ControlSet002" in proc.stdout and "gpt -> uefi" in proc.stdout
    facts = json.loads(report.read_text())["details"]["facts"]
    assert facts["windows"]["build"] == 17763 and facts["windows"]["virtio_os_dir"] == "2k19" and facts["firmware"] == "uefi"


def test_no_fuse_daemon_outlives_a_failure(media, tmp_path):
    disk, _ = media.disk("w7")
    iso, _ = media.iso("0.1.240")
    from pipeline.build.bake import refresh as bake_stage
    from tests.test_bake import spec

    with pytest.raises(BakeryError):
        bake_stage.bake(spec(iso), disk, iso, tmp_path / "work", build_epoch=0)
    mounts = open("/proc/mounts").read()
    assert str(tmp_path) not in mounts
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout
    assert leftovers == ""
