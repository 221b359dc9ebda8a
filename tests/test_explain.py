"""explain: the domain XML Nova's libvirt driver would generate, checked structurally per Nova era."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pipeline.common.errors import BakeryError
from pipeline.properties.explain import explain

WINDOWS = {"os_distro": "windows", "os_type": "windows"}
WIN11 = {**WINDOWS, "hw_machine_type": "q35", "hw_firmware_type": "uefi", "os_secure_boot": "required",
         "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb"}


def domain(props, nova):
    return ET.fromstring(explain(props, nova=nova).xml)


def hyperv(root):
    node = root.find("features/hyperv")
    return [] if node is None else [child.tag for child in node]


def test_2017_nova_gives_the_original_reports_xml():
    root = domain(WINDOWS, "pike")
    assert hyperv(root) == ["relaxed", "vapic", "spinlocks"]
    assert root.find("features/hyperv/spinlocks").get("retries") == "8191"
    assert all(e.get("state") == "on" for e in root.find("features/hyperv"))
    clock = root.find("clock")
    assert clock.get("offset") == "localtime"
    assert [(t.get("name"), t.get("tickpolicy") or t.get("present")) for t in clock] == [
        ("pit", "delay"), ("rtc", "catchup"), ("hpet", "no"), ("hypervclock", "yes")]


def test_without_os_type_no_enlightenments_and_utc():
    for seed in ({"os_distro": "windows"}, {"os_distro": "Windows", "os_type": "Windows"}):
        root = domain(seed, "pike")
        assert hyperv(root) == []
        assert root.find("clock").get("offset") == "utc"
        assert "hypervclock" not in [t.get("name") for t in root.find("clock")]


@pytest.mark.parametrize("nova,expected", [
    ("juno", ["relaxed", "vapic", "spinlocks"]),
    ("yoga", ["relaxed", "vapic", "spinlocks"]),
    ("zed", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi", "evmcs"]),
    ("2023.2", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi"]),
    ("caracal", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "tlbflush", "ipi"]),
])
def test_enlightenments_per_era(nova, expected):
    root = domain(WINDOWS, nova)
    assert hyperv(root) == expected
    has_hypervclock = "hypervclock" in [t.get("name") for t in root.find("clock")]
    assert has_hypervclock == (nova != "juno")


def test_windows_11_uefi_secure_boot_tpm():
    root = domain(WIN11, "master")
    assert root.find("os").get("firmware") == "efi"
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("os/loader").get("secure") == "yes"
    # 2026.2 (seen in the real driver): libvirt picks the Secure Boot firmware; Nova adds no <smm> itself
    assert root.find("os/firmware/feature[@name='secure-boot']").get("enabled") == "yes"
    assert root.find("features/smm") is None
    older = domain(WIN11, "2024.1")
    assert older.find("features/smm").get("state") == "on" and older.find("os/loader").get("type") == "pflash"
    tpm = root.find("devices/tpm")
    assert tpm.get("model") == "tpm-crb" and tpm.find("backend").get("version") == "2.0"


def test_scsi_bus_and_recommended_additions():
    explanation = explain({**WINDOWS, "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"}, nova="master")
    root = ET.fromstring(explanation.xml)
    assert root.find("devices/disk/target").get("bus") == "scsi"
    assert root.find("devices/controller").get("model") == "virtio-scsi"  # as the driver writes it
    assert explanation.recommended_additions["hw_firmware_type"] == "uefi"
    assert "os_type" not in explanation.recommended_additions


def test_unknown_release():
    with pytest.raises(BakeryError, match="unknown release"):
        explain(WINDOWS, nova="zebra")


def test_a_manifest_with_lint_errors_is_still_explained(tmp_path):
    from pipeline.chain import JobOptions, explain_manifest
    from pipeline.common.report import Report
    from tests.conftest import write_manifest

    manifest = write_manifest(tmp_path, tmp_path / "x.raw", "ab" * 32, os={"type": "Windows", "version": "10"})
    report = Report("explain")
    explanation = explain_manifest(JobOptions(manifest, release_date="2026-11-01"), report, nova="pike")
    assert explanation.enlightenments == ()
    assert "os-type-windows" in {f["rule"] for f in report.lint}
