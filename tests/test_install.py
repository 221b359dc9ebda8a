"""Install from media under real QEMU (TCG here), with the stand-in guest playing Windows Setup.

The stand-in (pipeline/synthetic/standin.py) boots from an install-like ISO under SeaBIOS or OVMF, reads
autounattend.xml from the config media, applies the image the answer file names, reboots like Setup and
powers off, or hangs or panics when its standin.cfg says so. Everything else is the production code path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline import chain
from pipeline.build.vm import VmFailed
from pipeline.common.errors import LintFailed, ManifestError
from pipeline.common.report import Report
from tests.conftest import processes_mentioning, project_images
from tests.test_cli import INVOKE, PROJECT_ROOT

PASSWORD = "Bakery-Admin-Pa55word!"
MARKER_OFFSET = 40 * 512
SNAKEOIL_VARS = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"
FAMILIES = {
    "w10": {"os_distro_major": "w10entx64", "os_edition": "DESKTOP"},
    "w11": {"os_distro_major": "w11entx64", "os_edition": "DESKTOP"},
}


def install_manifest(tmp_path: Path, media, install_media, *, windows="w10", index=1, mode="normal", reboots=2,
                     timeout_minutes=3.0, bake=True, os_version="10", **install) -> Path:
    iso, iso_sha = install_media
    virtio, virtio_sha = media.iso("0.1.240")
    (tmp_path / "admin-password").write_text(PASSWORD + "\n")
    (tmp_path / "standin.cfg").write_text(f"STANDIN_MODE={mode}\nSTANDIN_REBOOTS={reboots}\n")
    document = {
        "name": f"Windows {windows} [{{{{ release_date }}}}]",
        "family": {"os_distro": "windows", "architecture": "x86_64", **FAMILIES[windows]},
        "os": {"type": "windows", "version": os_version},
        "install": {
            "media": {"path": str(iso), "sha256": iso_sha},
            "virtio_win": {"path": str(virtio), "sha256": virtio_sha},
            "windows": windows,
            "image": {"index": index},
            "edition": "Enterprise",
            "administrator_password": {"file": "admin-password"},
            "firmware": "bios",
            "disk_size_gib": 1,
            "memory_mib": 512,
            "cpus": 1,
            "timeout_minutes": timeout_minutes,
            "tcg_timeout_factor": 1,
            "config_files": {"standin.cfg": "standin.cfg"},
            **install,
        },
        "image": {"visibility": "private", "min_ram": 512},
        "properties": {"hw_vif_model": "virtio", "hw_qemu_guest_agent": "yes"},
    }
    if bake:
        document["bake"] = {"virtio_win": {"path": str(virtio), "sha256": virtio_sha}}
    path = tmp_path / "install.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def publish(manifest: Path, target, date: str, report: Report | None = None) -> Report:
    return chain.build_and_publish(chain.JobOptions(manifest, release_date=date), report or Report("t"), target=target)


def first_bytes(target, image_id: str, count: int) -> bytes:
    data = b""
    for chunk in target.glance.images.data(image_id):
        data += chunk
        if len(data) >= count:
            break
    return data[:count]


def marker(data: bytes) -> dict[str, str]:
    text = data[MARKER_OFFSET:MARKER_OFFSET + 512].rstrip(b"\0 \n").decode()
    assert text.startswith("BAKERY-STANDIN "), text
    return dict(field.split("=", 1) for field in text.split()[1:])


@pytest.mark.slow
def test_bios_install_reboots_then_refresh_publish_and_demote(media, install_media, target, tmp_path, isolated_state):
    # last month's release of the family, from a golden image: the install must supersede it
    disk, disk_sha = media.disk("w10-oldvirtio", "qcow2")
    virtio, virtio_sha = media.iso("0.1.240")
    golden = tmp_path / "golden.yaml"
    golden.write_text(yaml.safe_dump({
        "name": "Windows w10 [{{ release_date }}]", "family": {"os_distro": "windows", "architecture": "x86_64", **FAMILIES["w10"]},
        "os": {"type": "windows", "version": "10"}, "source": {"path": str(disk), "sha256": disk_sha, "format": "qcow2"},
        "bake": {"virtio_win": {"path": str(virtio), "sha256": virtio_sha}}, "image": {"visibility": "private"},
        "properties": {"hw_disk_bus": "virtio", "hw_firmware_type": "bios"}}))
    previous = publish(golden, target, "2026-10-01")

    report = publish(install_manifest(tmp_path, media, install_media), target, "2026-11-01")

    install = report.details["install"]
    assert install["vm"]["outcome"] == "powered-off" and install["vm"]["reboots"] == 2
    events = [json.loads(line) for line in Path(install["vm"]["event_log"]).read_text().splitlines()]
    assert [e["event"] for e in events][-1] == "SHUTDOWN" and "RESET" in [e["event"] for e in events]
    assert events[-1]["data"]["guest"] is True
    props = report.image["properties"]
    assert props["os_type"] == "windows" and props["hw_firmware_type"] == "bios" and props["hw_disk_bus"] == "virtio"
    assert props["bakery_windows_build"] == "19045" and props["bakery_install_media_sha256"] == install_media[1]
    assert "os_secure_boot" not in props and "hw_tpm_version" not in props
    found = marker(first_bytes(target, report.image["id"], MARKER_OFFSET + 512))
    assert found["answer"] == install["answer_sha256"], "the guest did not read the answer file the pipeline rendered"
    assert found["image"] == "1" and found["firmware"] == "bios"
    assert [d["id"] for d in report.demoted] == [previous.image["id"]]
    assert target.glance.images.get(previous.image["id"])["recommended"] == "false"
    # the secret stays out of everything kept, and the config media carrying it is gone
    logs = Path(install["logs"])
    kept = "".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in (".xml", ".log", ".jsonl"))
    assert PASSWORD not in kept + report.to_json()
    assert "*SENSITIVE*DATA*DELETED*" in (logs / "autounattend.redacted.xml").read_text()
    assert not list(isolated_state.rglob("config.iso"))
    # the installed disk is kept by the install stage's id, for months that only change the refresh
    assert [p.relative_to(isolated_state).parts[:2] for p in isolated_state.rglob("installed.qcow2")] == [("cache", "install")]
    assert processes_mentioning(str(logs)) == []


@pytest.mark.slow
def test_uefi_secure_boot_tpm_windows_11(media, install_media, target, tmp_path):
    manifest = install_manifest(tmp_path, media, install_media, windows="w11", index=3, reboots=0, firmware="uefi", os_version="11",
                                secure_boot=True, tpm=True, ovmf={"vars": SNAKEOIL_VARS}, timeout_minutes=4.0)
    report = publish(manifest, target, "2026-11-01")
    found = marker(first_bytes(target, report.image["id"], MARKER_OFFSET + 512))
    assert (found["firmware"], found["secureboot"], found["tpm"], found["image"]) == ("uefi", "1", "2", "3")
    props = report.image["properties"]
    assert props["hw_firmware_type"] == "uefi" and props["hw_machine_type"] == "q35"
    assert props["os_secure_boot"] == "required"
    assert (props["hw_tpm_version"], props["hw_tpm_model"]) == ("2.0", "tpm-crb")
    assert props["bakery_windows_build"] == "22631"
    assert (Path(report.details["install"]["logs"]) / "OVMF_VARS.fd").stat().st_size > 0


@pytest.mark.slow
def test_hung_setup_times_out_with_a_screenshot(media, install_media, target, tmp_path):
    manifest = install_manifest(tmp_path, media, install_media, mode="hang", timeout_minutes=0.4)
    report = Report("t")
    with pytest.raises(VmFailed) as failure:
        publish(manifest, target, "2026-11-01", report)
    line = failure.value.one_line()
    assert "did not power off within 0.4 min" in line and "screenshot" in line and "\n" not in line
    vm = report.details["install"]["vm"]
    assert vm["outcome"] == "timeout" and vm["screenshot"]
    assert Path(vm["screenshot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "hanging" in Path(vm["serial_log"]).read_text()
    assert processes_mentioning(report.details["install"]["logs"]) == []
    assert project_images(target) == []


def test_guest_panic_fails_the_build_and_the_password_is_never_printed(media, install_media, target, tmp_path, monkeypatch):
    monkeypatch.setenv("BAKERY_TEST_PASSWORD", PASSWORD)
    # on pc (i440fx, PIIX IDE CD-ROMs), the machine the legacy Windows 7 manifest uses
    manifest = install_manifest(tmp_path, media, install_media, mode="panic", machine="pc",
                                administrator_password={"env": "BAKERY_TEST_PASSWORD"})
    report = Report("t")
    with pytest.raises(VmFailed) as failure:
        publish(manifest, target, "2026-11-01", report)
    assert "the guest panicked" in failure.value.one_line()
    assert "panicking" in Path(report.details["install"]["vm"]["serial_log"]).read_text(), "the stand-in never found its media"
    assert PASSWORD not in failure.value.one_line() + report.to_json()
    vm = report.details["install"]["vm"]
    assert vm["outcome"] == "panic" and Path(vm["screenshot"]).is_file()
    assert processes_mentioning(report.details["install"]["logs"]) == []
    assert project_images(target) == []


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_no_qemu_or_swtpm_outlives_an_interrupted_build(media, install_media, glance_server, tmp_path, how):
    manifest = install_manifest(tmp_path, media, install_media, mode="hang", firmware="uefi", tpm=True, timeout_minutes=5)
    state = tmp_path / "cli-state"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("OS_")}, "BAKERY_STATE_DIR": str(state),
           "BAKERY_GLANCE_PORT": str(glance_server.port)}
    build = subprocess.Popen([INVOKE, "build-and-publish", "--manifest", str(manifest), "--release-date", "2026-11-01"],
                             cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not any("hanging" in p.read_text(errors="replace") for p in state.glob("logs/install-*/serial.log")):
            assert build.poll() is None and time.monotonic() < deadline, "the guest never got going"
            time.sleep(0.5)
        running = " ".join(processes_mentioning(str(state)))
        assert "qemu-system-x86_64" in running and "swtpm" in running, running
        build.send_signal(how)
        build.wait(60)
    finally:
        if build.poll() is None:
            build.kill()
    deadline = time.monotonic() + 15
    while processes_mentioning(str(state)) and time.monotonic() < deadline:
        time.sleep(0.2)  # PDEATHSIG is delivered at once, but the kernel takes a moment to reap
    assert processes_mentioning(str(state)) == []
    if how == signal.SIGINT:
        assert build.returncode == 130 and "Traceback" not in build.stderr


def test_a_missing_password_stops_before_any_vm(media, install_media, target, tmp_path, monkeypatch):
    monkeypatch.delenv("BAKERY_TEST_PASSWORD", raising=False)
    manifest = install_manifest(tmp_path, media, install_media, administrator_password={"env": "BAKERY_TEST_PASSWORD"})
    with pytest.raises(ManifestError) as failure:
        publish(manifest, target, "2026-11-01")
    assert "install.administrator_password: environment variable BAKERY_TEST_PASSWORD is not set" in failure.value.one_line()
    assert project_images(target) == []


def test_plan_of_an_install_starts_no_vm(media, install_media, target, tmp_path, isolated_state):
    manifest = install_manifest(tmp_path, media, install_media, firmware="uefi", disk_bus="virtio-scsi")
    report = chain.plan(chain.JobOptions(manifest, release_date="2026-11-01"), Report("plan"), target=target)
    assert report.plan["upload"] == {"path": None, "installed_from": str(install_media[0])}
    props = report.plan["properties"]
    assert (props["hw_disk_bus"], props["hw_scsi_model"], props["hw_firmware_type"]) == ("scsi", "virtio-scsi", "uefi")
    assert props["min_disk"] == "1" and "install" not in report.details
    assert not (isolated_state / "logs").exists()


@pytest.mark.slow
def test_a_new_virtio_win_for_the_refresh_does_not_reinstall(media, install_media, target, tmp_path):
    manifest = install_manifest(tmp_path, media, install_media, reboots=0)
    first = publish(manifest, target, "2026-11-01")
    assert first.details["cache"] == {"build": "miss"} and "install" in first.timings
    iso, iso_sha = media.iso("0.1.262")
    document = yaml.safe_load(manifest.read_text())
    document["bake"]["virtio_win"] = {"path": str(iso), "sha256": iso_sha}
    manifest.write_text(yaml.safe_dump(document))
    second = publish(manifest, target, "2026-12-01")
    assert second.details["cache"] == {"build": "miss", "install": "hit"} and "install" not in second.timings
    assert second.details["stages"]["install"] == first.details["stages"]["install"]
    assert second.image["properties"]["bakery_virtio_win_version"] == "0.1.262"
    assert [d["id"] for d in second.demoted] == [first.image["id"]]


def test_a_property_error_stops_before_setup_starts(media, install_media, target, tmp_path, isolated_state):
    manifest = install_manifest(tmp_path, media, install_media)
    document = yaml.safe_load(manifest.read_text())
    document["os"]["type"] = "Windows"  # Nova would not enlighten these guests: refused before hours of Setup
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(LintFailed) as failure:
        publish(manifest, target, "2026-11-01")
    assert "os_type" in failure.value.one_line()
    assert not (isolated_state / "logs").exists() and processes_mentioning(str(isolated_state)) == []
