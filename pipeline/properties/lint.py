"""Rules that a property set must pass before anything is published.

Each rule has an id, a severity, a paragraph saying why it matters and the source it rests on; a manifest
can suppress a rule with a reason (`lint: {suppress: {rule-id: reason}}`), and the finding is then kept,
marked suppressed, in reports.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from pipeline.common.sinks import MACHINE_TYPE
from pipeline.properties import metadefs, scs
from pipeline.properties.nova_fields import NOVA_ENUMS

GiB = 1024**3
MAX_PROPERTIES = 128

# oslo_utils.strutils.bool_from_string: anything else is silently False.
TRUE_STRINGS = ("1", "t", "true", "on", "y", "yes")
FALSE_STRINGS = ("0", "f", "false", "off", "n", "no")

NOVA_BOOLEANS = ("hw_time_hpet", "hw_vif_multiqueue_enabled", "hw_pmu", "hw_firmware_stateless", "hw_boot_menu",
                 "hw_mem_encryption", "hw_virtio_packed_ring", "hw_locked_memory", "hw_pci_numa_affinity_policy_strict")
# Known keys outside metadefs that are fine on a Windows image (Nova image_meta or this project's own).
KNOWN_EXTRA = {"os_secure_boot", "hw_input_bus", "hw_time_hpet", "os_hidden", "os_hash_algo", "os_hash_value",
               "os_distro_major", "os_edition", "os", "os_admin_user"}
CHECKED_PREFIXES = ("hw_", "os_", "img_")
# Nova's list instead of the metadefs', where the metadefs lack the property or name a value Nova refuses. Elsewhere
# lint keeps to the metadefs, which are stricter than Nova (they leave out the VMware names Nova still maps).
NOVA_OVER_METADEFS = ("os_secure_boot", "hw_input_bus", "hw_tpm_model", "hw_tpm_version", "hypervisor_type")


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" stops the publish; "warning" is reported
    summary: str
    source: str
    check: Callable[[dict, dict], Iterator[tuple[str | None, str]]]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str  # error, warning, or suppressed
    property: str | None
    message: str
    source: str
    reason: str | None = field(default=None)  # why it was suppressed

    def one_line(self) -> str:
        where = f"{self.property}: " if self.property else ""
        return f"[{self.rule}] {where}{self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


RULES: dict[str, Rule] = {}


def rule(id: str, severity: str, summary: str, source: str):
    def register(check):
        RULES[id] = Rule(id, severity, summary, source, check)
        return check

    return register


def lint(properties: dict, facts: dict | None = None, suppress: dict[str, str] | None = None) -> list[Finding]:
    """All findings for a property set; `facts` are what is known about the image (virtual_size, ...)."""
    suppress = suppress or {}
    findings = []
    for r in RULES.values():
        for prop, message in r.check(properties, facts or {}):
            if r.id in suppress:
                findings.append(Finding(r.id, "suppressed", prop, message, r.source, suppress[r.id]))
            else:
                findings.append(Finding(r.id, r.severity, prop, message, r.source))
    return findings


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def _windows_distro(props: dict) -> bool:
    """os_distro names Windows in any spelling (windows, Windows, win10, win2k19, ...)."""
    distro = props.get("os_distro")
    return isinstance(distro, str) and distro.strip().lower().startswith("win")


def _looks_windows(props: dict) -> bool:
    return _windows_distro(props) or props.get("os_type") == "windows"


def _is_windows_11(props: dict) -> bool:
    text = " ".join(str(props.get(k, "")) for k in ("os_distro", "os_distro_major", "os_version")).lower()
    return bool(re.search(r"\bwin(dows)?[ _-]?11|\bw11|\b11\b", text)) and _looks_windows(props)


# -- rules ----------------------------------------------------------------------------------------------


@rule(
    "os-type-windows",
    "error",
    "A Windows image must carry os_type exactly 'windows'. Nova adds the Hyper-V enlightenments (relaxed, "
    "vapic, spinlocks, hypervclock, ...) and the localtime clock only for that exact string; without them "
    "Windows guests on loaded hosts blue-screen with CLOCK_WATCHDOG_TIMEOUT. os_distro plays no part.",
    "nova/virt/libvirt/driver.py (_set_features, _set_clock, _set_kvm_timers)",
)
def _os_type_windows(props: dict, facts: dict):
    if not _windows_distro(props):
        return
    distro = props["os_distro"]
    os_type = props.get("os_type")
    if os_type is None:
        yield "os_type", f"missing while os_distro is {distro!r}: Nova adds no Hyper-V enlightenments (Windows guests can blue-screen with CLOCK_WATCHDOG_TIMEOUT); set os_type: windows"
    elif os_type != "windows":
        yield "os_type", f"is {os_type!r}; Nova compares the raw string to 'windows', so this gets no Hyper-V enlightenments; set exactly 'windows'"


@rule(
    "value-not-string",
    "error",
    "Every property value is a string: Glance's image schema types extra properties as strings and "
    "python-glanceclient refuses anything else.",
    "glance/api/v2/images.py (get_schema: additionalProperties {'type': 'string'})",
)
def _values_are_strings(props: dict, facts: dict):
    for key, value in props.items():
        if not isinstance(value, str):
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            yield key, f"value {value!r} is a {type(value).__name__}; quote it in YAML so it is the string {shown!r}"


@rule(
    "enum-value",
    "error",
    "Enumerated properties use a value Nova accepts: a bad value fails every boot from the image with a 400. "
    "Values come from Glance's metadefs, plus Nova's own lists where the metadefs lack the property or differ.",
    "glance etc/metadefs/*.json; nova/objects/fields.py; nova/objects/image_meta.py",
)
def _enum_values(props: dict, facts: dict):
    definitions = metadefs.image_properties()
    for key, value in props.items():
        if not isinstance(value, str):
            continue
        nova = key in NOVA_OVER_METADEFS
        allowed = NOVA_ENUMS[key] if nova else (definitions[key].enum if key in definitions else ())
        if allowed and value not in allowed:
            origin = "Nova" if nova else definitions[key].namespace
            yield key, f"{value!r} is not one of {', '.join(allowed)} ({origin})"


@rule(
    "bool-silently-false",
    "error",
    "Nova reads boolean properties with oslo's bool_from_string: any value outside "
    "1/t/true/on/y/yes/0/f/false/off/n/no is silently taken as false, so a typo switches a feature off.",
    "oslo_utils/strutils.py (bool_from_string); nova/objects/image_meta.py",
)
def _booleans(props: dict, facts: dict):
    definitions = metadefs.image_properties()
    for key, value in props.items():
        is_bool = key in NOVA_BOOLEANS or (key in definitions and definitions[key].type == "boolean")
        if is_bool and isinstance(value, str) and value.strip().lower() not in TRUE_STRINGS + FALSE_STRINGS:
            yield key, f"{value!r} is not a boolean Nova understands; it is silently read as false (use true or false)"


@rule(
    "trait-prefix",
    "error",
    "Required traits are image properties named trait:<NAME>=required. Glance's OS::Compute::VTPM "
    "namespace proposes a traits: prefix, which Nova never reads.",
    "nova/scheduler/utils.py (ResourceRequest: 'trait:' prefix); glance etc/metadefs/compute-vtpm.json",
)
def _trait_prefix(props: dict, facts: dict):
    for key in props:
        if key.startswith("traits:"):
            yield key, f"Nova ignores the 'traits:' prefix; use {'trait:' + key[len('traits:'):]!r}"


@rule(
    "reserved-key",
    "error",
    "Keys starting with os_glance_ are reserved by Glance for its own use and are refused or overwritten.",
    "glance/api/v2/images.py (os_glance_ reserved namespace)",
)
def _reserved(props: dict, facts: dict):
    for key in props:
        if key.startswith("os_glance_"):
            yield key, "os_glance_* keys are reserved by Glance"


@rule(
    "too-many-properties",
    "error",
    "Glance's default image_property_quota is 128 extra properties; beyond that the create or update fails.",
    "glance/common/config.py (image_property_quota = 128)",
)
def _quota(props: dict, facts: dict):
    if len(props) > MAX_PROPERTIES:
        yield None, f"{len(props)} properties; Glance accepts at most {MAX_PROPERTIES} by default"


@rule(
    "unknown-property",
    "warning",
    "Nova silently ignores property names it does not know, so a misspelt hw_/os_/img_ key does nothing.",
    "nova/objects/image_meta.py (ImageMetaProps: unknown keys are dropped)",
)
def _unknown(props: dict, facts: dict):
    known = set(metadefs.image_properties()) | KNOWN_EXTRA | set(NOVA_ENUMS) | set(NOVA_BOOLEANS)
    for key in props:
        if key.startswith(CHECKED_PREFIXES) and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            yield key, f"not a property Nova or Glance's metadefs know{hint}"


@rule(
    "secure-boot-needs-uefi-q35",
    "error",
    "os_secure_boot=required needs UEFI firmware and the q35 machine type (SMM); otherwise Nova refuses to "
    "boot the instance.",
    "nova/virt/libvirt/driver.py (_check_secure_boot_support, _set_features)",
)
def _secure_boot(props: dict, facts: dict):
    if props.get("os_secure_boot") == "required":
        if props.get("hw_firmware_type") != "uefi":
            yield "hw_firmware_type", "os_secure_boot=required needs hw_firmware_type=uefi"
        machine = props.get("hw_machine_type") or ""
        if "q35" not in machine:
            yield "hw_machine_type", f"os_secure_boot=required needs a q35 machine type, got {machine or 'none'}"


@rule(
    "machine-type",
    "error",
    "hw_machine_type names a QEMU machine type: pc or q35, or a versioned pc-i440fx-X.Y / pc-q35-X.Y. libvirt "
    "refuses any other name, so every boot fails; and the value is one QEMU option value, so a comma or '=' "
    "(q35,kernel=...) would add options of its own to the guest's command line.",
    "nova/virt/libvirt/utils.py (get_default_machine_type, mach_type); QEMU -machine help",
)
def _machine_type(props: dict, facts: dict):
    value = props.get("hw_machine_type")
    if value is not None and not (isinstance(value, str) and MACHINE_TYPE.fullmatch(value)):
        yield "hw_machine_type", f"{value!r} is not a machine type; expected pc, q35, pc-i440fx-X.Y or pc-q35-X.Y"


@rule(
    "tpm-model-version",
    "error",
    "The CRB interface exists only for TPM 2.0; Nova rejects hw_tpm_model=tpm-crb with version 1.2, and a "
    "model without a version adds no TPM at all.",
    "nova/virt/hardware.py (get_vtpm_constraint)",
)
def _tpm(props: dict, facts: dict):
    model, version = props.get("hw_tpm_model"), props.get("hw_tpm_version")
    if model == "tpm-crb" and version != "2.0":
        yield "hw_tpm_model", f"tpm-crb needs hw_tpm_version=2.0, got {version or 'none'}"
    if model and not version:
        yield "hw_tpm_version", "hw_tpm_model without hw_tpm_version adds no TPM"


@rule(
    "windows11-requirements",
    "error",
    "Windows 11 refuses to install or update without UEFI, Secure Boot and TPM 2.0, so its images need "
    "hw_firmware_type=uefi, os_secure_boot=required (with q35) and hw_tpm_version=2.0.",
    "Microsoft Windows 11 system requirements; nova/virt/libvirt/driver.py",
)
def _windows11(props: dict, facts: dict):
    if not _is_windows_11(props):
        return
    if props.get("hw_firmware_type") != "uefi":
        yield "hw_firmware_type", "Windows 11 needs uefi"
    if props.get("os_secure_boot") != "required":
        yield "os_secure_boot", "Windows 11 needs Secure Boot: set os_secure_boot=required"
    if props.get("hw_tpm_version") != "2.0":
        yield "hw_tpm_version", "Windows 11 needs a TPM 2.0: set hw_tpm_version=2.0 (and hw_tpm_model=tpm-crb)"


@rule(
    "min-disk-too-small",
    "error",
    "min_disk (GiB) below the image's virtual size lets Nova schedule flavors whose root disk cannot hold it; "
    "the boot then fails late with a FlavorDiskSmallerThanImage error.",
    "nova/compute/api.py (_validate_flavor_image_nostatus)",
)
def _min_disk(props: dict, facts: dict):
    virtual_size = facts.get("virtual_size")
    if virtual_size is None or "min_disk" not in props:
        return
    needed = math.ceil(virtual_size / GiB)
    try:
        min_disk = int(props["min_disk"])
    except (TypeError, ValueError):
        yield "min_disk", f"{props['min_disk']!r} is not a whole number of GiB"
        return
    if min_disk < needed:
        yield "min_disk", f"{min_disk} GiB is below the virtual size ({needed} GiB)"


@rule(
    "release-date-iso",
    "error",
    "release_date is an ISO date (YYYY-MM-DD): it orders the releases of a family and is compared as text.",
    "this project's release convention (pipeline/publish/release.py)",
)
def _release_date(props: dict, facts: dict):
    value = props.get("release_date")
    if value is None:
        if _looks_windows(props):
            yield "release_date", "missing"
        return
    try:
        if not (isinstance(value, str) and len(value) == 10 and dt.date.fromisoformat(value)):
            raise ValueError
    except ValueError:
        yield "release_date", f"{value!r} is not an ISO date YYYY-MM-DD"


@rule(
    "scs-0102",
    "error",
    "An image published with an scs: profile promises SCS-0102's metadata; the standard's own checker fails the "
    "cloud for an image whose properties break it (hw_disk_bus=sata, a missing os_purpose, no min_ram, ...). "
    "The per-image test cases the checker runs on properties alone are run here, before anything is built; "
    "suppress the rule to publish such an image anyway.",
    "SovereignCloudStack/standards Tests/iaas/scs_0102_image_metadata/image_metadata.py (compute_scs_0102_prop_*)",
)
def _scs_0102(props: dict, facts: dict):
    if "replace_frequency" not in props:  # no scs: profile: the standard is not promised
        return
    now = dt.datetime.now(dt.timezone.utc)
    for finding in scs.check_properties({key: value for key, value in props.items() if value not in (None, "")}, now):
        if finding.level == "error":
            prop = finding.check.removeprefix("scs-0102-prop-")
            yield (prop if prop in props or prop in scs.PROPERTY_CHECKS else None), f"{finding.check}: {finding.message}"


# -- rules that need facts read from the image itself (pipeline/windows/inspection.py) ---------------------------

# Which driver a device model needs in the guest, and whether the guest must boot through it.
DEVICE_DRIVERS = {
    ("hw_disk_bus", "virtio"): ("viostor", True),
    ("hw_scsi_model", "virtio-scsi"): ("vioscsi", True),
    ("hw_vif_model", "virtio"): ("NetKVM", False),
    ("hw_input_bus", "virtio"): ("vioinput", False),
}


@rule(
    "device-needs-driver",
    "error",
    "A virtio device model the guest has no driver for leaves it without that device: hw_disk_bus=virtio "
    "(or virtio-scsi) on an image without a bootable viostor (vioscsi) is a STOP 0x7B INACCESSIBLE_BOOT_DEVICE "
    "at the first boot; hw_vif_model=virtio without NetKVM is an instance without network. Checked against "
    "the drivers inspection finds in the image (boot-start service + CriticalDeviceDatabase or DriverDatabase "
    "for boot drivers; staged or installed for the others).",
    "nova/virt/libvirt/blockinfo.py (get_disk_bus_for_device_type), nova/virt/libvirt/vif.py; virt-v2v's "
    "Windows virtio injection",
)
def _device_drivers(props: dict, facts: dict):
    drivers = facts.get("drivers")
    if drivers is None:
        return
    for (key, value), (driver, boot) in DEVICE_DRIVERS.items():
        if props.get(key) != value:
            continue
        if key == "hw_scsi_model" and props.get("hw_disk_bus") not in ("scsi", None):
            continue
        state = drivers.get(driver, {})
        if boot and not state.get("bootable"):
            yield key, f"{key}={value} needs {driver} installed as a boot driver, and the image has none bootable"
        elif not boot and not state.get("present"):
            yield key, f"{key}={value} needs the {driver} driver, which the image neither has nor stages"


@rule(
    "guest-agent-missing",
    "warning",
    "hw_qemu_guest_agent=yes adds the agent's channel; without the agent in the image, quiesced snapshots "
    "and password injection time out instead of failing fast.",
    "nova/virt/libvirt/driver.py (_set_qemu_guest_agent, _can_quiesce)",
)
def _guest_agent(props: dict, facts: dict):
    if "guest_agent" not in facts:
        return
    if str(props.get("hw_qemu_guest_agent", "")).lower() in TRUE_STRINGS and not facts["guest_agent"]:
        yield "hw_qemu_guest_agent", "the image carries no QEMU guest agent (add the qemu-guest-agent element)"


@rule(
    "firmware-matches-disk",
    "error",
    "Windows boots a GPT disk only through UEFI and an MBR disk only through BIOS: hw_firmware_type must "
    "match the partition table inspection finds, or the instance never gets past its firmware.",
    "Microsoft: Windows and GPT FAQ; nova/virt/libvirt/driver.py (_get_guest_config os_loader)",
)
def _firmware(props: dict, facts: dict):
    firmware = facts.get("firmware")
    if firmware is None:
        return
    declared = props.get("hw_firmware_type", "bios")
    if declared != firmware:
        yield "hw_firmware_type", f"{declared} declared, but the disk's {'GPT' if firmware == 'uefi' else 'MBR'} layout boots only with {firmware}"


@rule(
    "version-matches-image",
    "error",
    "os_version and os_distro_major describe the Windows users get; they must agree with the image's "
    "registry (CurrentBuildNumber, InstallationType), or a desktop family ends up serving a server image.",
    "SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion; this project's family convention",
)
def _version_matches(props: dict, facts: dict):
    windows = facts.get("windows")
    if not windows:
        return
    actual = windows["os_version"]
    declared = props.get("os_version")
    if declared is not None and str(declared).lower().replace(" ", "") != actual.lower():
        yield "os_version", f"{declared!r} declared, but the image is {windows['product_name']} (build {windows['build']}: os_version {actual!r})"
    major = str(props.get("os_distro_major", "")).lower()
    client = re.match(r"^w(?:in)?(\d+(?:\.\d+)?)", major) if not major.startswith(("ws", "win20", "w20")) else None
    if client and windows["server"]:
        yield "os_distro_major", f"{major!r} names a desktop Windows, but the image is {windows['product_name']}"
    elif major.startswith(("ws", "2k", "win20", "w20")) and not windows["server"]:
        yield "os_distro_major", f"{major!r} names a Windows Server, but the image is {windows['product_name']}"
    elif client and _client_version(client.group(1)) != actual:
        yield "os_distro_major", f"{major!r} names Windows {_client_version(client.group(1))}, but the image is {windows['product_name']}"


def _client_version(digits: str) -> str:
    """The family convention writes Windows 8.1 without its dot (w81entx64)."""
    return "8.1" if digits == "81" else digits


@rule(
    "architecture-matches-image",
    "error",
    "architecture tells Nova's ImagePropertiesFilter which hosts can run the image and libvirt which guest "
    "to emulate; it must be the image's own (PROCESSOR_ARCHITECTURE in its registry: AMD64 is x86_64, X86 "
    "is i686, ARM64 is aarch64). A 32-bit Windows published as x86_64 lands on hosts and in catalogues "
    "that describe it wrongly, and an ARM64 one does not boot on x86_64 at all.",
    "SYSTEM\\ControlSet00N\\Control\\Session Manager\\Environment; nova/objects/fields.py (Architecture); "
    "nova/scheduler/filters/image_props_filter.py",
)
def _architecture_matches(props: dict, facts: dict):
    windows = facts.get("windows")
    declared = props.get("architecture")
    if not windows or declared is None or windows.get("arch") is None:
        return
    actual = windows.get("architecture")
    if actual is None:
        yield "architecture", f"{declared!r} declared, but the image's PROCESSOR_ARCHITECTURE {windows.get('arch')!r} is not one this tool knows"
    elif _canonical_architecture(declared) != actual:
        yield "architecture", f"{declared!r} declared, but the image is {windows['arch']} Windows (architecture {actual!r})"


# The family convention ends os_distro_major with the architecture: w10entx64, w7entx86, w11entarm64.
FAMILY_ARCHITECTURE = (("arm64", "aarch64"), ("x64", "x86_64"), ("x86", "i686"))


@rule(
    "family-name-architecture",
    "error",
    "os_distro_major names the architecture in its last letters (x64, x86, arm64), and users pick a family by "
    "that name; a family called w7entx64 whose images say architecture=i686 puts 32-bit Windows where a "
    "64-bit one is promised (and lands it on hosts Nova's ImagePropertiesFilter matches to i686).",
    "this project's family convention; nova/objects/fields.py (Architecture); nova/scheduler/filters/image_props_filter.py",
)
def _family_name_architecture(props: dict, facts: dict):
    major, declared = props.get("os_distro_major"), props.get("architecture")
    if not isinstance(major, str) or declared is None:
        return
    named = next((arch for suffix, arch in FAMILY_ARCHITECTURE if major.lower().endswith(suffix)), None)
    if named and _canonical_architecture(declared) != named:
        yield "architecture", f"{declared!r}, but the family {major!r} names {named} in its last letters"


def _canonical_architecture(name) -> str:
    """As Nova canonicalizes it (nova/objects/fields.py Architecture.canonicalize): i386/i486/i586 and Xen's
    x86_32 are i686, amd64 is x86_64."""
    lowered = str(name).lower()
    if lowered in ("i386", "i486", "i586", "x86_32", "x86_32p"):
        return "i686"
    return "x86_64" if lowered == "amd64" else lowered
