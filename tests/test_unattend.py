"""The answer file, the config media, the install manifest and the accelerator probe: no VM needed."""

from __future__ import annotations

import io
import os
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pycdlib
import pytest
import yaml

from pipeline.build.install import unattend
from pipeline.build.vm import probe_accelerator
from pipeline.chain import JobOptions, lint_manifest
from pipeline.common.errors import BakeryError, ManifestError
from pipeline.common.paths import MANIFESTS
from pipeline.common.report import Report
from pipeline.manifest import load_manifest
from pipeline.windows.virtio_win import VirtioWin

NS = "{urn:schemas-microsoft-com:unattend}"
PASSWORD = "s3cret<&>\"pass"


def manifest_file(tmp_path: Path, **install) -> Path:
    (tmp_path / "pw").write_text(PASSWORD)
    document = {
        "name": "Windows Server 2022 [{{ release_date }}]",
        "family": {"os_distro": "windows", "os_distro_major": "w2022stdx64", "os_edition": "SERVER", "architecture": "x86_64"},
        "os": {"type": "windows", "version": "2022"},
        "install": {
            "media": {"path": "setup.iso", "sha256": "a" * 64},
            "virtio_win": {"path": "virtio-win.iso", "sha256": "b" * 64},
            "windows": "2k22", "image": {"name": "Windows Server 2022 SERVERSTANDARD"}, "edition": "ServerStandard",
            "administrator_password": {"file": "pw"}, "firmware": "uefi", "disk_bus": "virtio-scsi", **install,
        },
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def rendered(tmp_path: Path, **install) -> tuple[unattend.AnswerFile, ET.Element]:
    manifest = load_manifest(manifest_file(tmp_path, **install), release_date="2026-11-01")
    answer = unattend.render(manifest, password=unattend.read_secret(manifest.install.administrator_password, manifest),
                             key=unattend.product_key(manifest.install, manifest), guest_agent=True)
    return answer, ET.fromstring(answer.text.encode())


def component(root: ET.Element, pass_name: str, name: str) -> ET.Element:
    return root.find(f"{NS}settings[@pass='{pass_name}']/{NS}component[@name='{name}']")


def test_uefi_answer_file_has_gpt_layout_scsi_drivers_and_the_kms_key(tmp_path):
    answer, root = rendered(tmp_path)
    assert answer.text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    setup = component(root, "windowsPE", "Microsoft-Windows-Setup")
    types = [e.text for e in setup.iter(f"{NS}Type")]
    assert types == ["EFI", "MSR", "Primary"]
    assert setup.find(f".//{NS}InstallTo/{NS}PartitionID").text == "3"
    assert setup.find(f".//{NS}MetaData/{NS}Key").text == "/IMAGE/NAME"
    assert setup.find(f".//{NS}ProductKey/{NS}Key").text == "VDYBN-27WPP-V4HQT-9VMD4-VMK7H"
    pe_paths = [p.text for p in component(root, "windowsPE", "Microsoft-Windows-PnpCustomizationsWinPE").iter(f"{NS}Path")]
    assert "E:\\drivers\\vioscsi" in pe_paths and "E:\\drivers\\NetKVM" in pe_paths
    assert not any("viostor" in p for p in pe_paths)
    # the password survives XML escaping intact, and only the redacted copy is kept
    shell = component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    assert shell.find(f".//{NS}AdministratorPassword/{NS}Value").text == PASSWORD
    assert PASSWORD not in answer.redacted and "*SENSITIVE*DATA*DELETED*" in answer.redacted
    assert "sysprep.exe\" /generalize /oobe /shutdown" in answer.firstlogon and "\r\n" in answer.firstlogon


def test_bios_answer_file_has_an_active_mbr_layout_and_viostor(tmp_path):
    answer, root = rendered(tmp_path, firmware="bios", disk_bus="virtio-blk", windows="w7", edition="Enterprise",
                            image={"index": 4})
    setup = component(root, "windowsPE", "Microsoft-Windows-Setup")
    assert [e.text for e in setup.iter(f"{NS}Type")] == ["Primary", "Primary"]
    assert [e.text for e in setup.iter(f"{NS}Active")] == ["true"]
    assert setup.find(f".//{NS}InstallTo/{NS}PartitionID").text == "2"
    assert setup.find(f".//{NS}MetaData/{NS}Value").text == "4"
    assert any(p.text.endswith("\\viostor") for p in component(root, "windowsPE", "Microsoft-Windows-PnpCustomizationsWinPE").iter(f"{NS}Path"))
    assert "HideOnlineAccountScreens" not in answer.text, "Windows 7 Setup rejects settings it does not know"


@pytest.mark.parametrize("breakage, message", [
    (lambda t: t.replace("<AcceptEula>true</AcceptEula>", "<AcceptEula>false</AcceptEula>"), "AcceptEula must be true"),
    (lambda t: t.replace('pass="oobeSystem"', 'pass="auditUser"'), "the oobeSystem pass is missing"),
    (lambda t: t.replace("</unattend>", ""), "not well-formed XML"),
    (lambda t: t.replace("<Type>MSR</Type>", "<Type>Primary</Type>"), "UEFI needs GPT partitions EFI and MSR"),
    (lambda t: t.replace("\\drivers\\vioscsi<", "\\drivers\\viostor<"), "lacks driver paths for vioscsi"),
    (lambda t: t.replace("<Enabled>true</Enabled>", "<Enabled>false</Enabled>"), "FirstLogonCommands never run"),
    (lambda t: t.replace('processorArchitecture="amd64"', 'processorArchitecture="x86"', 1), "processorArchitecture is 'x86'"),
    (lambda t: t.replace('name="Microsoft-Windows-PnpCustomizationsNonWinPE"', 'name="Microsoft-Windows-Foo"'),
     "lacks the Microsoft-Windows-PnpCustomizationsNonWinPE component"),
])
def test_answer_file_checks_name_what_setup_would_stop_at(tmp_path, breakage, message):
    answer, _ = rendered(tmp_path)
    manifest = load_manifest(manifest_file(tmp_path), release_date="2026-11-01")
    with pytest.raises(BakeryError) as failure:
        unattend.check(replace(answer, text=breakage(answer.text)), manifest.install)
    assert message in failure.value.one_line()
    assert PASSWORD not in failure.value.one_line()


def test_firstlogon_must_end_in_sysprep_shutdown(tmp_path):
    answer, _ = rendered(tmp_path)
    manifest = load_manifest(manifest_file(tmp_path), release_date="2026-11-01")
    with pytest.raises(BakeryError, match="sysprep /generalize ... /shutdown"):
        unattend.check(replace(answer, firstlogon=answer.firstlogon.replace("/shutdown", "/reboot")), manifest.install)


def test_config_media_carries_the_answer_file_drivers_agent_and_extra_files(media, tmp_path):
    iso, _ = media.iso("0.1.240")
    (tmp_path / "site.ps1").write_text("Write-Host site\n")
    manifest = load_manifest(manifest_file(tmp_path, config_files={"site.ps1": "site.ps1"}), release_date="2026-11-01")
    answer, _ = rendered(tmp_path)
    with VirtioWin(iso) as drivers:
        written = unattend.write_config_media(tmp_path / "config.iso", answer, drivers, manifest.install, tmp_path / "scratch")
    config, virtio = read_iso(tmp_path / "config.iso"), read_iso(iso)
    assert config("/autounattend.xml") == answer.text.encode()
    assert config("/site.ps1") == b"Write-Host site\n"
    assert config("/guest-agent/qemu-ga-x86_64.msi") == virtio("/guest-agent/qemu-ga-x86_64.msi")
    assert config("/drivers/vioscsi/vioscsi.inf") == virtio("/vioscsi/2k22/amd64/vioscsi.inf")
    assert config("/drivers/vioscsi/vioscsi.inf") != virtio("/vioscsi/w10/amd64/vioscsi.inf")
    assert {"drivers/viostor/viostor.sys", "drivers/NetKVM/netkvm.inf", "firstlogon.cmd", "bakery-config.txt"} <= set(written)


@pytest.mark.parametrize("install, field, expected", [
    ({"secure_boot": True, "firmware": "bios"}, "install.secure_boot", "needs firmware: uefi"),
    ({"secure_boot": True, "machine": "pc"}, "install.machine", "Secure Boot needs machine: q35"),
    ({"administrator_password": "hunter2"}, "install.administrator_password", "expected a mapping"),
    ({"administrator_password": {"file": "pw", "env": "X"}}, "install.administrator_password", "exactly one of file"),
    ({"product_key": "ABCDE-12345-ABCDE-12345-ABCDE"}, "install.product_key", "never the key itself"),
    ({"windows": "xp"}, "install.windows", "expected one of w7"),
    ({"image": {"index": 1, "name": "x"}}, "install.image", "exactly one of index or name"),
    ({"disk_bus": "ide"}, "install.disk_bus", "expected one of virtio-blk, virtio-scsi"),
    ({"timeout_minutes": 0}, "install.timeout_minutes", "expected a number above 0"),
    ({"config_files": {"autounattend.xml": "pw"}}, "install.config_files.autounattend.xml", "not autounattend.xml"),
])
def test_install_section_errors_are_one_line(tmp_path, install, field, expected):
    with pytest.raises(ManifestError) as failure:
        load_manifest(manifest_file(tmp_path, **install), release_date="2026-11-01")
    line = failure.value.one_line()
    assert f": {field}: " in line and expected in line and "m.yaml" in line


def test_source_and_install_are_exclusive(tmp_path):
    path = manifest_file(tmp_path)
    document = yaml.safe_load(path.read_text())
    document["source"] = {"path": "x.raw", "sha256": "c" * 64}
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ManifestError, match="exactly one of source .* or install"):
        load_manifest(path, release_date="2026-11-01")


def test_unknown_kms_edition_is_refused(tmp_path):
    manifest = load_manifest(manifest_file(tmp_path, edition="ServerFoundation"), release_date="2026-11-01")
    with pytest.raises(ManifestError, match="no KMS client key for 2k22 ServerFoundation; expected one of ServerDatacenter, ServerStandard"):
        unattend.product_key(manifest.install, manifest)


def read_iso(path: Path):
    def read(joliet_path: str) -> bytes:
        reader = pycdlib.PyCdlib()
        reader.open(str(path))
        try:
            buffer = io.BytesIO()
            reader.get_file_from_iso_fp(buffer, joliet_path=joliet_path)
            return buffer.getvalue()
        finally:
            reader.close()

    return read


def fake_host(tmp_path: Path, flags: str, pvm: bool) -> tuple[Path, Path]:
    tmp_path.mkdir(parents=True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    sysfs = tmp_path / "module"
    (sysfs / ("kvm_pvm" if pvm else "kvm")).mkdir(parents=True)
    return cpuinfo, sysfs


def test_accelerator_probe_does_not_trust_dev_kvm_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("BAKERY_ACCEL", raising=False)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert probe_accelerator().name == "tcg"
        pytest.skip("/dev/kvm is not accessible here: only the no-device case can be checked")
    assert probe_accelerator(*fake_host(tmp_path / "a", "", pvm=False)).name == "tcg"
    assert probe_accelerator(*fake_host(tmp_path / "b", "vmx", pvm=True)).name == "tcg"
    found = probe_accelerator(*fake_host(tmp_path / "c", "svm", pvm=False))
    assert found.name == "kvm", found.reason
    monkeypatch.setenv("BAKERY_ACCEL", "tcg")
    assert probe_accelerator(*fake_host(tmp_path / "d", "vmx", pvm=False)).name == "tcg"


def test_an_accelerator_override_that_is_neither_kvm_nor_tcg_is_refused(monkeypatch):
    """A typo used to fall back to probing: a release engineer who asked for TCG could get KVM, or the reverse."""
    from pipeline.common.errors import BakeryError

    for typo in ("kvmm", "TCG", "hvf"):
        monkeypatch.setenv("BAKERY_ACCEL", typo)
        with pytest.raises(BakeryError, match=f"BAKERY_ACCEL: expected one of kvm, tcg, got '{typo}'"):
            probe_accelerator()
    monkeypatch.setenv("BAKERY_ACCEL", "")
    assert probe_accelerator().reason != "BAKERY_ACCEL"


@pytest.mark.parametrize("name, expected", [
    ("ws2022std-install.yaml", {"hw_firmware_type": "uefi", "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi",
                                "hw_machine_type": "q35", "os_version": "2022"}),
    ("w11entx64.yaml", {"hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_tpm_version": "2.0",
                        "hw_tpm_model": "tpm-crb", "hw_machine_type": "q35", "hw_disk_bus": "virtio"}),
    ("w10entx64-install.yaml", {"hw_firmware_type": "bios", "hw_disk_bus": "virtio", "os_distro_major": "w10entx64"}),
    ("w7entx64.yaml", {"hw_firmware_type": "bios", "hw_machine_type": "pc", "os_type": "windows", "os_version": "7"}),
])
def test_catalog_manifests_render_what_they_build(name, expected):
    report = lint_manifest(JobOptions(MANIFESTS / name, release_date="2026-11-01"), Report("lint"))
    props = report.details["properties"]
    assert {key: props.get(key) for key in expected} == expected
    assert not [f for f in report.lint if f["severity"] == "error"]
    if "secure_boot" not in name and name != "w11entx64.yaml":
        assert "os_secure_boot" not in props
    assert props["min_disk"] == "40"
