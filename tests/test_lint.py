"""Every lint rule has a case that trips it and a case that passes."""

from __future__ import annotations

import pytest

from pipeline.common.errors import ManifestError
from pipeline.properties import lint
from tests.test_properties import rendered

GiB = 1024**3
BASE = {"os_distro": "windows", "os_type": "windows", "release_date": "2026-11-01", "os_version": "10"}
WIN11_OK = {**BASE, "os_version": "11", "os_distro_major": "w11entx64", "hw_firmware_type": "uefi", "hw_machine_type": "q35",
            "os_secure_boot": "required", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb"}

SCS_OK = {**BASE, "architecture": "x86_64", "hypervisor_type": "qemu", "hw_disk_bus": "virtio", "os_purpose": "generic", "min_ram": "2048",
          "image_build_date": "2026-11-01", "image_original_user": "Administrator", "image_source": "private",
          "image_description": "https://example.org/w10", "replace_frequency": "monthly", "provided_until": "2029-01-09",
          "uuid_validity": "last-3"}
W10 = {"os_version": "10", "build": 19045, "server": False, "product_name": "Windows 10 Enterprise"}
S2019 = {"os_version": "2019", "build": 17763, "server": True, "product_name": "Windows Server 2019 Standard"}
NO_DRIVERS = {"drivers": {}, "guest_agent": False, "firmware": "bios", "windows": W10}
REFRESHED = {"drivers": {name: {"bootable": name in ("viostor", "vioscsi"), "present": True}
                         for name in ("viostor", "vioscsi", "NetKVM", "vioinput")},
             "guest_agent": True, "firmware": "bios", "windows": W10}
VIRTIO_SET = {**BASE, "hw_disk_bus": "virtio", "hw_vif_model": "virtio", "hw_input_bus": "virtio", "hw_qemu_guest_agent": "yes"}

CASES = [
    # rule id, failing properties, passing properties, facts
    ("os-type-windows", {**BASE, "os_type": "Windows"}, BASE, {}),
    ("os-type-windows", {k: v for k, v in BASE.items() if k != "os_type"}, BASE, {}),
    ("value-not-string", {**BASE, "hw_pmu": False}, {**BASE, "hw_pmu": "false"}, {}),
    ("enum-value", {**BASE, "hw_video_model": "std"}, {**BASE, "hw_video_model": "virtio"}, {}),
    ("enum-value", {**BASE, "os_secure_boot": "yes"}, {**BASE, "os_secure_boot": "optional"}, {}),
    ("enum-value", {**BASE, "hw_input_bus": "ps2"}, {**BASE, "hw_input_bus": "virtio"}, {}),
    ("enum-value", {**BASE, "hypervisor_type": "powervm"}, {**BASE, "hypervisor_type": "qemu"}, {}),
    ("bool-silently-false", {**BASE, "hw_time_hpet": "enabled"}, {**BASE, "hw_time_hpet": "true"}, {}),
    ("bool-silently-false", {**BASE, "hw_vif_multiqueue_enabled": "enabled"}, {**BASE, "hw_vif_multiqueue_enabled": "yes"}, {}),
    ("trait-prefix", {**BASE, "traits:COMPUTE_SECURITY_TPM_2_0": "required"}, {**BASE, "trait:COMPUTE_SECURITY_TPM_2_0": "required"}, {}),
    ("reserved-key", {**BASE, "os_glance_importing_to_stores": "x"}, BASE, {}),
    ("too-many-properties", {**BASE, **{f"x_{i}": "1" for i in range(130)}}, {**BASE, **{f"x_{i}": "1" for i in range(100)}}, {}),
    ("unknown-property", {**BASE, "hw_disk_buss": "virtio"}, {**BASE, "hw_disk_bus": "virtio"}, {}),
    ("secure-boot-needs-uefi-q35", {**BASE, "os_secure_boot": "required", "hw_firmware_type": "bios", "hw_machine_type": "pc"},
     {**BASE, "os_secure_boot": "required", "hw_firmware_type": "uefi", "hw_machine_type": "pc-q35-7.2"}, {}),
    ("machine-type", {**BASE, "hw_machine_type": "q35,kernel=/etc/passwd"}, {**BASE, "hw_machine_type": "pc-q35-8.2"}, {}),
    ("machine-type", {**BASE, "hw_machine_type": "q35\n"}, {**BASE, "hw_machine_type": "q35"}, {}),
    ("family-name-architecture", {**BASE, "os_distro_major": "w7entx64", "architecture": "i686"},
     {**BASE, "os_distro_major": "w7entx86", "architecture": "i686"}, {}),
    ("family-name-architecture", {**BASE, "os_distro_major": "w11entarm64", "architecture": "x86_64"},
     {**BASE, "os_distro_major": "w11entx64", "architecture": "amd64"}, {}),
    ("scs-0102", {**SCS_OK, "hw_disk_bus": "sata"}, SCS_OK, {}),
    ("scs-0102", {k: v for k, v in SCS_OK.items() if k != "os_purpose"}, SCS_OK, {}),
    ("tpm-model-version", {**BASE, "hw_tpm_model": "tpm-crb", "hw_tpm_version": "1.2"},
     {**BASE, "hw_tpm_model": "tpm-crb", "hw_tpm_version": "2.0"}, {}),
    ("windows11-requirements", {**WIN11_OK, "hw_firmware_type": "bios"}, WIN11_OK, {}),
    ("windows11-requirements", {k: v for k, v in WIN11_OK.items() if not k.startswith("hw_tpm")}, WIN11_OK, {}),
    ("min-disk-too-small", {**BASE, "min_disk": "20"}, {**BASE, "min_disk": "41"}, {"virtual_size": 40 * GiB + 1}),
    ("release-date-iso", {**BASE, "release_date": "2026-11"}, BASE, {}),
    ("device-needs-driver", {**BASE, "hw_disk_bus": "virtio"}, {**BASE, "hw_disk_bus": "sata"}, NO_DRIVERS),
    ("device-needs-driver", {**BASE, "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi"}, {**BASE, "hw_disk_bus": "ide"}, NO_DRIVERS),
    ("device-needs-driver", {**BASE, "hw_vif_model": "virtio"}, {**BASE, "hw_vif_model": "e1000"}, NO_DRIVERS),
    ("guest-agent-missing", {**BASE, "hw_qemu_guest_agent": "yes"}, {**BASE, "hw_qemu_guest_agent": "no"}, NO_DRIVERS),
    ("firmware-matches-disk", {**BASE, "hw_firmware_type": "bios"}, {**BASE, "hw_firmware_type": "uefi"}, {"firmware": "uefi"}),
    ("firmware-matches-disk", {**BASE, "hw_firmware_type": "uefi"}, BASE, {"firmware": "bios"}),
    ("version-matches-image", {**BASE, "os_distro_major": "w10entx64"},
     {**BASE, "os_version": "2019", "os_distro_major": "ws2019stdx64"}, {"windows": S2019}),
    ("version-matches-image", {**BASE, "os_version": "10", "os_distro_major": "ws2019stdx64"},
     {**BASE, "os_version": "2019", "os_distro_major": "w2019stdx64"}, {"windows": S2019}),
    ("version-matches-image", {**BASE, "os_version": "10", "os_distro_major": "w11entx64"},
     {**BASE, "os_distro_major": "w10entx64"}, {"windows": W10}),
    ("architecture-matches-image", {**BASE, "architecture": "i686"}, {**BASE, "architecture": "x86_64"},
     {"windows": {**W10, "arch": "AMD64", "architecture": "x86_64"}}),
    ("architecture-matches-image", {**BASE, "architecture": "x86_64"}, {**BASE, "architecture": "i386"},
     {"windows": {**W10, "arch": "X86", "architecture": "i686"}}),
]


@pytest.mark.parametrize("rule_id,failing,passing,facts", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule_trips_and_passes(rule_id, failing, passing, facts):
    assert rule_id in {f.rule for f in lint.lint(failing, facts)}
    assert rule_id not in {f.rule for f in lint.lint(passing, facts)}


def test_every_rule_has_a_case_and_documentation():
    assert {c[0] for c in CASES} == set(lint.RULES)
    for r in lint.RULES.values():
        assert r.severity in ("error", "warning") and len(r.summary) > 40 and r.source


def test_driver_rules_follow_the_image_facts():
    """The same virtio property set is refused on an image without drivers and accepted after a refresh."""
    assert {"device-needs-driver", "guest-agent-missing"} <= {f.rule for f in lint.lint(VIRTIO_SET, NO_DRIVERS)}
    assert not lint.errors(lint.lint(VIRTIO_SET, REFRESHED))
    not_bootable = {**REFRESHED, "drivers": {**REFRESHED["drivers"], "viostor": {"bootable": False, "present": True}}}
    finding = next(f for f in lint.lint(VIRTIO_SET, not_bootable) if f.rule == "device-needs-driver")
    assert finding.property == "hw_disk_bus" and "viostor" in finding.message


def test_facts_rules_are_silent_without_facts():
    assert not {"device-needs-driver", "guest-agent-missing", "firmware-matches-disk", "version-matches-image",
                "architecture-matches-image"} & {f.rule for f in lint.lint({**VIRTIO_SET, "architecture": "x86_64"}, {})}


def test_did_you_mean():
    finding = next(f for f in lint.lint({**BASE, "hw_disk_buss": "virtio"}) if f.rule == "unknown-property")
    assert "did you mean 'hw_disk_bus'" in finding.message and finding.severity == "warning"


def test_a_suppressed_rule_is_reported_but_does_not_stop(tmp_path):
    manifest, props = rendered(tmp_path, properties={"hw_time_hpet": "enabled"},
                               lint={"suppress": {"bool-silently-false": "site patch reads 'enabled' as true"}})
    suppressed = [f for f in props.findings if f.rule == "bool-silently-false"]
    assert suppressed and suppressed[0].severity == "suppressed" and "site patch" in suppressed[0].reason


def test_suppressing_needs_a_known_rule_and_a_reason(tmp_path):
    with pytest.raises(ManifestError, match="unknown rule"):
        rendered(tmp_path, lint={"suppress": {"no-such-rule": "because"}})
    with pytest.raises(ManifestError, match="needs a reason"):
        rendered(tmp_path, lint={"suppress": {"enum-value": " "}})
