"""The canary boot under real QEMU (TCG here): the built image boots on the machine its properties describe.

The stand-in "Windows" (pipeline/synthetic/standin_windows.py) boots from the image's own MBR or ESP, stops
with 0x7B when no boot driver fits its disk's controller (as Windows does), reports the hardware it found
on the serial port, answers the guest agent and writes the ready marker. Everything else is production code.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline import chain
from pipeline.build.vm import probe_accelerator
from pipeline.canary import CanaryFailed
from pipeline.common.errors import BakeryError, LintFailed, ManifestError
from pipeline.common.report import Report
from tests.conftest import processes_mentioning, project_images

SNAKEOIL_VARS = "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd"  # enrolls the key the stand-in's ESP image is signed with


def manifest(tmp_path: Path, disk: tuple[Path, str], *, properties: dict, canary: dict | None = None, bake=None,
             name: str = "canary", release: str = "w10", suppress: dict | None = None) -> Path:
    path, sha = disk
    major = {"w10": "w10entx64", "w11": "w11entx64"}[release]
    document = {
        "name": f"Windows {release} canary [{{{{ release_date }}}}]",
        "family": {"os_distro": "windows", "architecture": "x86_64", "os_distro_major": major, "os_edition": "DESKTOP"},
        "os": {"type": "windows", "version": release.removeprefix("w")},
        "source": {"path": str(path), "sha256": sha, "format": "raw"},
        "image": {"visibility": "private"},
        "properties": properties,
        "canary": {"timeout_minutes": 3, "tcg_timeout_factor": 1, "memory_mib": 512, "cpus": 1, **(canary or {})},
    }
    if bake:
        document["bake"] = {"virtio_win": {"path": str(bake[0]), "sha256": bake[1]}}
    if suppress:
        document["lint"] = {"suppress": suppress}
    target = tmp_path / f"{name}.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def publish(path: Path, target, date: str) -> Report:
    return chain.build_and_publish(chain.JobOptions(path, release_date=date), Report("t"), target=target)


def hardware_seen(report: dict) -> dict[str, str]:
    """What the stand-in found on its PCI bus and firmware, from its serial log."""
    serial = Path(report["canary"]["vm"]["serial_log"]).read_text(errors="replace")
    line = next(line for line in serial.splitlines() if line.startswith("standin: hardware: "))
    return dict(field.split("=", 1) for field in line.removeprefix("standin: hardware: ").split())


@pytest.mark.slow
def test_bios_image_boots_as_nova_would_and_records_it(bootable, media, target, tmp_path):
    virtio = media.iso("0.1.240")
    props = {"hw_disk_bus": "virtio", "hw_vif_model": "e1000", "hw_qemu_guest_agent": "yes", "hw_video_model": "vga"}
    path = manifest(tmp_path, bootable("w10"), properties=props, bake=virtio)

    report = publish(path, target, "2026-11-01")

    details = report.details
    seen = hardware_seen(details)
    assert (seen["disk_bus"], seen["nic"], seen["firmware"], seen["machine"], seen["video"], seen["agent"]) == \
        ("virtio-blk", "e1000", "bios", "pc", "vga", "yes"), seen
    recorded = report.image["properties"]["bakery_canary"]
    accel = probe_accelerator().name
    assert recorded.startswith(f"ok accelerator={accel} duration_s=")
    command = details["canary"]["qemu_command"]
    assert "virtio-blk-pci,drive=disk0,bootindex=1" in command and "e1000,netdev=net0" in command
    assert "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0" in command and ["-rtc", "base=localtime"] == command[command.index("-rtc"):command.index("-rtc") + 2]
    assert not any(arg.startswith("file=") and "media" in arg and "cdrom" in arg for arg in command)
    if accel == "kvm":
        assert seen["hyperv"] == "yes"
    else:  # TCG gives no Hyper-V enlightenments: said in the report, and the guest indeed saw none
        assert "need KVM" in " ".join(details["canary"]["notes"]) and seen["hyperv"] == "no"
    assert not list(Path(details["canary"]["logs"]).parent.parent.rglob("canary-overlay.qcow2"))
    assert processes_mentioning(details["canary"]["logs"]) == []

    # the same bytes on the same machine again (the bake job of the same release): no second boot
    again = chain.bake(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), out=tmp_path / "artifact")
    assert again.details["canary"]["cached"] is True
    record = json.loads((tmp_path / "artifact" / "record.json").read_text())
    assert record["properties"]["bakery_canary"] == recorded


@pytest.mark.slow
def test_uefi_secure_boot_tpm_and_virtio_scsi_reach_the_guest(bootable, media, target, tmp_path):
    props = {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "required", "hw_tpm_version": "2.0",
             "hw_tpm_model": "tpm-crb", "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi", "hw_vif_model": "virtio"}
    path = manifest(tmp_path, bootable("w11"), properties=props, bake=media.iso("0.1.240"), release="w11",
                    canary={"ready": "serial-marker", "ovmf": {"vars": SNAKEOIL_VARS}})

    report = publish(path, target, "2026-11-01")

    seen = hardware_seen(report.details)
    assert (seen["firmware"], seen["secureboot"], seen["tpm"], seen["disk_bus"], seen["machine"], seen["nic"]) == \
        ("uefi", "1", "2", "virtio-scsi", "q35", "virtio_net"), seen
    assert report.image["properties"]["bakery_canary"].startswith("ok ")


@pytest.mark.slow
def test_a_disk_bus_the_image_cannot_boot_from_fails_and_publishes_nothing(bootable, media, target, tmp_path):
    disk = bootable("w10")  # not baked: no viostor.sys, so only the in-box SATA/IDE drivers can boot it
    good = publish(manifest(tmp_path, disk, name="good", properties={"hw_disk_bus": "sata", "hw_machine_type": "q35"},
                            canary={"ready": "serial-marker"}), target, "2026-10-01")
    assert good.image["properties"]["bakery_canary"].startswith("ok ")
    before = {image["id"]: image for image in project_images(target)}

    # lint reads the image's registry and refuses it first; with that rule suppressed, the canary still catches it
    with pytest.raises(LintFailed, match="device-needs-driver"):
        chain.build_and_publish(chain.JobOptions(manifest(tmp_path, disk, name="bad", properties={"hw_disk_bus": "virtio"},
                                                          canary={"ready": "serial-marker"}), release_date="2026-11-01"),
                                Report("t"), target=target)
    report = Report("t")
    with pytest.raises(CanaryFailed) as failure:
        chain.build_and_publish(chain.JobOptions(manifest(tmp_path, disk, name="bad", properties={"hw_disk_bus": "virtio"},
                                                          canary={"ready": "serial-marker"},
                                                          suppress={"device-needs-driver": "the canary must catch it alone"}),
                                                 release_date="2026-11-01"),
                                report, target=target)

    message = failure.value.one_line()
    assert "\n" not in message and "bad.yaml: canary:" in message and "disk bus virtio-blk" in message and "panicked" in message
    serial = Path(report.details["canary"]["vm"]["serial_log"]).read_text(errors="replace")
    assert "INACCESSIBLE_BOOT_DEVICE" in serial and "no boot driver for virtio-blk: service viostor" in serial  # read from SYSTEM
    assert report.details["canary"]["vm"]["screenshot"] and Path(report.details["canary"]["vm"]["screenshot"]).stat().st_size > 0
    after = {image["id"]: image for image in project_images(target)}
    assert after.keys() == before.keys(), "nothing may be created when the canary fails"
    assert after[good.image["id"]]["recommended"] == "true"
    assert processes_mentioning(report.details["canary"]["logs"]) == []


@pytest.mark.slow
def test_a_guest_that_never_becomes_ready_times_out(bootable, target, tmp_path):
    path = manifest(tmp_path, bootable("w10"), properties={"hw_disk_bus": "sata", "hw_machine_type": "q35"},
                    canary={"ready": "serial-marker", "marker": "NEVER-WRITTEN", "timeout_minutes": 0.75})
    report = Report("t")
    with pytest.raises(CanaryFailed, match="was not ready within 0.8 min"):
        chain.build_and_publish(chain.JobOptions(path, release_date="2026-11-01"), report, target=target)
    assert report.details["canary"]["vm"]["outcome"] == "timeout" and report.details["canary"]["vm"]["screenshot"]
    assert project_images(target) == []


def test_ready_by_guest_agent_needs_the_agent_property_and_is_refused_before_building(bootable, target, tmp_path):
    path = manifest(tmp_path, bootable("w10"), properties={"hw_disk_bus": "sata"}, canary={"ready": "guest-agent"})
    with pytest.raises(ManifestError, match=r"canary\.ready: guest-agent needs the property hw_qemu_guest_agent=yes"):
        publish(path, target, "2026-11-01")
    assert project_images(target) == []


@pytest.mark.parametrize("props, expected", [
    ({"hw_disk_bus": "ide", "hw_machine_type": "q35"}, "q35 has no IDE controller"),
    ({"hw_disk_bus": "usb"}, "hw_disk_bus=usb cannot be booted by the canary"),
    ({"hw_vif_model": "virtio", "hw_video_model": "gop"}, "hw_video_model=gop has no QEMU device"),
])
def test_hardware_nova_would_refuse_is_refused_before_building(bootable, target, tmp_path, props, expected):
    path = manifest(tmp_path, bootable("w10"), properties=props, canary={"ready": "serial-marker"})
    with pytest.raises(BakeryError, match=expected) as failure:
        publish(path, target, "2026-11-01")
    assert "canary" in failure.value.one_line() and "\n" not in failure.value.one_line()
    assert project_images(target) == [] and "work" not in [p.name for p in Path(tmp_path / "state").glob("*")]


def test_an_unknown_nova_release_is_a_manifest_error(bootable, target, tmp_path):
    path = manifest(tmp_path, bootable("w10"), properties={}, canary={"ready": "serial-marker", "nova": "zebra"})
    with pytest.raises(ManifestError, match=r"canary\.nova: expected a Nova release name"):
        publish(path, target, "2026-11-01")


@pytest.mark.parametrize("marker", ["standin: hardware:", "SeaBIOS", "Booting from Hard Disk", "GRUB", "BdsDxe"])
def test_a_marker_that_firmware_or_a_loader_prints_is_refused(bootable, target, tmp_path, marker):
    path = manifest(tmp_path, bootable("w10"), properties={"hw_disk_bus": "sata"}, canary={"ready": "serial-marker", "marker": marker})
    with pytest.raises(ManifestError, match=r"canary\.marker: .* firmware or a boot loader prints"):
        publish(path, target, "2026-11-01")
    assert project_images(target) == []


def test_a_serial_marker_counts_only_with_this_boots_nonce(tmp_path):
    """The nonce reaches the guest as an SMBIOS OEM string, which no firmware prints; the marker alone, or with
    another boot's nonce, is not a ready guest."""
    from pipeline.build.vm import Accelerator, Drive, VmSpec, _MarkerScan, qemu_command, ready_line

    spec = VmSpec(disk=Drive(tmp_path / "d.qcow2", "qcow2"), disk_bus="sata", cdroms=(), role="canary", ready="serial-marker",
                  ready_marker="BAKERY-READY", ready_nonce="0123abcd")
    argv = qemu_command(spec, tmp_path, Accelerator("tcg", "test"), qmp_socket=tmp_path / "q.sock", tpm_socket=None)
    assert argv[argv.index("-smbios") + 1] == "type=11,value=bakery-ready-nonce=0123abcd"
    log = tmp_path / "serial.log"
    log.write_bytes(b"SeaBIOS\nstandin: BAKERY-READY\nstandin: BAKERY-READY ffffeeee\n")
    scan = _MarkerScan(log, ready_line(spec).encode())
    assert not scan.found()
    with open(log, "ab") as more:
        more.write(b"standin: BAKERY-READY 0123abcd hardware...\n")
    assert scan.found()


def test_plan_shows_the_machine_the_canary_would_boot_and_boots_nothing(bootable, media, target, tmp_path, isolated_state):
    props = {"hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi", "hw_vif_model": "e1000e", "hw_qemu_guest_agent": "yes"}
    path = manifest(tmp_path, bootable("w10"), properties=props, bake=media.iso("0.1.240"))  # the bake brings vioscsi
    report = chain.plan(chain.JobOptions(path, release_date="2026-11-01"), Report("t"), target=target)
    planned = report.plan["canary"]
    assert (planned["disk_bus"], planned["nic"], planned["machine"], planned["guest_agent"]) == ("virtio-scsi", "e1000e", "pc", True)
    assert "relaxed" in planned["enlightenments"] and "<hyperv>" in planned["domain_xml"]
    assert "disk virtio-scsi, nic e1000e" in report.plan["summary"]["would boot first (canary)"]
    assert not list(isolated_state.glob("logs/canary-*")) and project_images(target) == []


def test_missing_firmware_variables_are_refused_before_building(bootable, target, tmp_path, isolated_state):
    props = {"hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "required", "hw_tpm_version": "2.0",
             "hw_tpm_model": "tpm-crb", "hw_disk_bus": "sata"}
    path = manifest(tmp_path, bootable("w11"), release="w11", canary={"ready": "serial-marker", "ovmf": {"vars": "no-such-vars.fd"}},
                    properties=props)
    report = Report("t")
    with pytest.raises(BakeryError, match=r"canary VM: UEFI firmware variables .*no-such-vars.fd is not a file") as failure:
        chain.build_and_publish(chain.JobOptions(path, release_date="2026-11-01"), report, target=target)
    assert "\n" not in failure.value.one_line() and project_images(target) == [] and not (isolated_state / "work").exists()
