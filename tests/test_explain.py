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
    ("26.0.0", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi",
                "evmcs"]),
    ("26.2.9", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi",
                "evmcs"]),
    ("zed", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "tlbflush", "ipi"]),  # 26.3.0 on
    ("27.2.0", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi",
                "evmcs"]),
    ("2023.1", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "tlbflush", "ipi"]),  # 27.5.1
    ("28.0.0", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "reenlightenment", "tlbflush", "ipi",
                "evmcs"]),
    ("2023.2", ["relaxed", "vapic", "spinlocks", "vpindex", "runtime", "synic", "reset", "frequencies", "tlbflush", "ipi"]),  # 28.3.1
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


@pytest.mark.parametrize("nova, firmware", [("2023.1", "pflash"), ("2025.2", "pflash"), ("33.0.2", "auto"), ("2026.2", "auto")])
def test_uefi_before_and_after_firmware_auto_selection(nova, firmware):
    root = domain(WIN11, nova)
    os_el, features = root.find("os"), [child.tag for child in root.find("features")]
    if firmware == "auto":
        assert os_el.get("firmware") == "efi" and os_el.find("firmware/feature").get("enabled") == "yes"
        assert "smm" not in features and os_el.find("nvram") is None
    else:  # Nova names the OVMF file and its variables template, and turns SMM on first of all
        assert os_el.get("firmware") is None and os_el.find("loader").text.endswith("OVMF_CODE.secboot.fd")
        assert os_el.find("nvram").get("template").endswith("OVMF_VARS.ms.fd") and features[0] == "smm"


@pytest.mark.parametrize("value, present", [("true", "yes"), ("yes", "yes"), ("1", "yes"), ("on", "yes"), ("no", "no"), ("enabled", "no")])
def test_hpet_is_read_as_nova_reads_booleans(value, present):
    assert domain({**WINDOWS, "hw_time_hpet": value}, "2024.1").find("clock/timer[@name='hpet']").get("present") == present


def test_a_version_is_taken_as_well_as_a_series_and_limitations_are_said():
    assert explain(WINDOWS, nova="27.5.1").version == "27.5.1" and explain(WINDOWS, nova="bobcat").version == "28.3.1"
    assert explain(WINDOWS, nova="2026.2").limitations == ()
    assert any("not compared" in note for note in explain(WINDOWS, nova="yoga").limitations)
    assert any("encryption" in note for note in explain(WIN11, nova="2026.2").limitations)
    with pytest.raises(BakeryError, match="not of a series"):
        explain(WINDOWS, nova="99.1.0")


def test_hiding_the_hypervisor_adds_the_vendor_id_and_kvm_hidden():
    root = domain({**WINDOWS, "img_hide_hypervisor_id": "yes"}, "2026.2")
    assert [c.tag for c in root.find("features/hyperv")][3] == "vendor_id"
    assert root.find("features/hyperv/vendor_id").get("value") == "1234567890ab"
    assert root.find("features/kvm/hidden").get("state") == "on"


# -- what Nova refuses before it builds any domain ---------------------------------------------------------------

NOVA_READS = """
import json, sys, warnings
warnings.simplefilter("ignore")
from nova.objects import image_meta
image_meta.ImageMetaProps.fields  # noqa: B018
FIELD = {"hypervisor_type": "img_hv_type"}  # the legacy key Nova reads into its field
tables = {key: list(image_meta.ImageMetaProps.fields[FIELD.get(key, key)]._type._valid_values) for key in json.loads(sys.argv[1])}
verdicts, held = [], []
for props in json.loads(sys.argv[2]):
    try:
        read = image_meta.ImageMetaProps.from_dict(props)
        verdicts.append("accepted")
        held.append({key: str(getattr(read, FIELD.get(key, key))) for key in props})
    except ValueError:
        verdicts.append("refused")
        held.append(None)
print(json.dumps({"tables": tables, "verdicts": verdicts, "held": held}))
"""

REFUSED_BY_NOVA = [{"hw_disk_bus": "VIRTIO"}, {"hw_disk_bus": "virtio\nerror: forged"}, {"hw_tpm_version": "2"},
                   {"os_secure_boot": "Required"}, {"hw_video_model": "VGA"}, {"hw_firmware_type": "UEFI"},
                   {"os_type": "windows "}, {"hw_vif_model": "virtio-net"}, {"hw_scsi_model": "virtio_scsi"},
                   {"hypervisor_type": "powervm"}]
ACCEPTED_BY_NOVA = [{"os_type": "Windows"}, {"hw_machine_type": "pc-q35-rhel9.2.0"},
                    {"hw_vif_model": "VirtualE1000"}, {"hw_vif_model": "VIRTIO"}, {"hw_vif_model": "virtualvmxnet3"},
                    {"hw_scsi_model": "lsiLogicSAS"}, {"hw_scsi_model": "paravirtual"}, {"hw_scsi_model": "VIRTIO-SCSI"},
                    {"hypervisor_type": "QEMU"}, {"hypervisor_type": "xapi"}]


def real_nova(props_list: list[dict]) -> dict:
    import json
    import subprocess
    import sys

    from pipeline.properties.nova_fields import NOVA_ENUMS

    pytest.importorskip("nova", reason="nova comes with the test extra (pip install -e .[test])")
    proc = subprocess.run([sys.executable, "-c", NOVA_READS, json.dumps(list(NOVA_ENUMS)), json.dumps(props_list)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_explain_refuses_exactly_what_nova_refuses_before_building_a_domain():
    """The enum lists are nova's own (ImageMetaProps, the installed release), and every case gets the same verdict
    from explain as from nova: a value nova refuses has no domain to explain, and one it accepts has one, read as
    nova holds it (hw_vif_model=VirtualE1000 is an e1000; os_type alone stays as written, see as_nova_reads)."""
    from pipeline.properties.nova_fields import NOVA_ENUMS, nova_value

    allowed = [{key: value} for key, values in NOVA_ENUMS.items() for value in values]
    cases = REFUSED_BY_NOVA + ACCEPTED_BY_NOVA + allowed
    nova = real_nova(cases)
    assert {key: tuple(values) for key, values in nova["tables"].items()} == NOVA_ENUMS
    for props, verdict, held in zip(cases, nova["verdicts"], nova["held"]):
        try:
            explain(props, nova="2026.2")
            ours = "accepted"
            read = {key: nova_value(key, value) for key, value in props.items()}
            assert read == held, props
        except BakeryError as refused:
            ours = "refused"
            key = next(iter(props))
            assert str(refused).startswith(f"{key}=") and "\n" not in str(refused)
        assert ours == verdict, props


def test_a_legacy_vmware_nic_name_is_explained_as_the_model_nova_boots():
    nic = domain({**WINDOWS, "hw_vif_model": "VirtualE1000"}, "2026.2").find("devices/interface/model")
    assert nic.get("type") == "e1000"


@pytest.mark.parametrize("machine", ["", "q35\x1b[2J", "q35\u202e", "pc\nerror: forged"])
def test_a_machine_type_libvirt_cannot_take_is_refused_not_written_into_the_xml(machine):
    with pytest.raises(BakeryError, match="^hw_machine_type="):
        explain({**WINDOWS, "hw_machine_type": machine}, nova="2026.2")
