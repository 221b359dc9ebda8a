"""What Nova's libvirt driver would put in the domain XML for a property set, per Nova version.

`--nova` takes a series (2024.1, caracal, zed: its newest point release known here) or a version (27.5.1).
Each behaviour is modelled from the version that introduced or removed it, with the source beside it:

- relaxed, vapic and spinlocks from the start of Windows support; hypervclock from Kilo (bug 1400315);
  vpindex, runtime, synic, reset, frequencies, tlbflush, ipi, evmcs and reenlightenment in Zed (26.0.0);
  evmcs (bug 2009280, broke AMD hosts) and reenlightenment (bug 2046549, broke live migration) removed again
  and backported: absent from 26.3.0, 27.3.0 and 28.1.0, and from 29.0.0 on.
- Measured against the real driver of 27.5.1, 28.3.1, 29.4.0, 31.3.1, 32.2.1, 33.0.2 and 34.0.0 (the issue
  that asked for this, #23) and compared here with nova 34 itself (tests/test_explain_real_nova.py):
  <vmcoreinfo/> in every one of them; hw_time_hpet read with oslo's bool_from_string; img_hide_hypervisor_id
  adds <hyperv><vendor_id state="on" value="1234567890ab"/> and <kvm><hidden state="on"/></kvm>; a USB tablet
  (hw_input_bus=virtio: a virtio tablet and keyboard); firmware auto-selection for UEFI (no pflash path,
  Secure Boot as a firmware feature, no <smm> of Nova's own) from 33.0.x; before it a pflash loader naming
  the OVMF file with an nvram template, and <smm state="on"/> first among the features for Secure Boot.
- Not modelled: the vTPM's <encryption secret=.../> (Nova creates that secret at spawn), the CPU topology
  (it follows the flavor, which an image does not name), and anything before 2023.1 that was not measured:
  explain says so on its output (Explanation.limitations).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from oslo_utils import strutils

from pipeline.common.errors import BakeryError
from pipeline.glance.images import custom_properties, fetch_image
from pipeline.properties.nova_fields import NovaRefuses, as_nova_reads

# (release name, ordinal) - the ordinal is Nova's major version.
RELEASES = {
    "juno": 10, "kilo": 11, "liberty": 12, "mitaka": 13, "newton": 14, "ocata": 15, "pike": 16, "queens": 17,
    "rocky": 18, "stein": 19, "train": 20, "ussuri": 21, "victoria": 22, "wallaby": 23, "xena": 24, "yoga": 25,
    "zed": 26, "2023.1": 27, "2023.2": 28, "2024.1": 29, "2024.2": 30, "2025.1": 31, "2025.2": 32, "2026.1": 33,
    "2026.2": 34,
}
ALIASES = {"antelope": "2023.1", "bobcat": "2023.2", "caracal": "2024.1", "dalmatian": "2024.2", "epoxy": "2025.1",
           "flamingo": "2025.2", "gazpacho": "2026.1", "hibiscus": "2026.2", "2017": "pike", "master": "2026.2"}
# A series means its newest point release: the ones the real driver was measured at (tests/data/nova-domains/),
# else "every fix in".
NEWEST_POINT = {26: (26, 3, 0), 27: (27, 5, 1), 28: (28, 3, 1), 29: (29, 4, 0), 30: (30, 3, 0), 31: (31, 3, 1), 32: (32, 2, 1), 33: (33, 0, 2),
                34: (34, 0, 0)}
MEASURED = {(27, 5, 1), (28, 3, 1), (29, 4, 0), (30, 3, 0), (31, 3, 1), (32, 2, 1), (33, 0, 2), (34, 0, 0)}
COMPARED_HERE = (34, 0, 0)  # the version tests/test_explain_real_nova.py runs
MEASURED_FROM = 27  # the oldest series the real driver was run at
AUTOSELECT_FROM = 33  # libvirt picks the firmware (os firmware="efi" + features) from 2026.1
# evmcs and reenlightenment: added in Zed, removed by these point releases (and absent from 29.0.0 on)
HYPERV_REMOVED_IN = {26: (26, 3, 0), 27: (27, 3, 0), 28: (28, 1, 0)}
HIDDEN_VENDOR_ID = "1234567890ab"  # nova/virt/libvirt/driver.py: the vendor id a hidden hypervisor reports
OVMF = "/usr/share/OVMF"
RECOMMENDED_WINDOWS = {"os_type": "windows", "hw_machine_type": "q35", "hw_firmware_type": "uefi", "hw_disk_bus": "virtio",
                       "hw_vif_model": "virtio", "hw_video_model": "virtio", "hw_qemu_guest_agent": "yes"}
VERSION = re.compile(r"(\d{2})\.(\d{1,2})\.(\d{1,2})")


@dataclass(frozen=True)
class Explanation:
    release: str
    xml: str
    enlightenments: tuple[str, ...]
    recommended_additions: dict[str, str]
    version: str = ""
    limitations: tuple[str, ...] = ()


def nova_version(name: str) -> tuple[int, int, int]:
    """A series name (its newest point release), an alias, or a version such as 27.5.1."""
    if VERSION.fullmatch(name):
        version = tuple(int(part) for part in name.split("."))
        if version[0] not in RELEASES.values():
            raise BakeryError(f"--nova: version {name} is not of a series explain knows ({min(RELEASES.values())}.x to "
                              f"{max(RELEASES.values())}.x)")
        return version
    key = ALIASES.get(name.lower(), name.lower())
    if key not in RELEASES:
        raise BakeryError(f"--nova: unknown release {name!r}; expected a version such as 27.5.1, or one of "
                          f"{', '.join(list(RELEASES) + list(ALIASES))}")
    major = RELEASES[key]
    return NEWEST_POINT.get(major, (major, 99, 99))


def release_number(name: str) -> int:
    return nova_version(name)[0]


def hyperv_features(version: tuple[int, int, int]) -> list[tuple[str, dict]]:
    major = version[0]
    features = [("relaxed", {}), ("vapic", {}), ("spinlocks", {"retries": "8191"})]
    if major >= RELEASES["zed"]:
        features += [("vpindex", {}), ("runtime", {}), ("synic", {}), ("reset", {}), ("frequencies", {}),
                     ("reenlightenment", {}), ("tlbflush", {}), ("ipi", {}), ("evmcs", {})]
        removed = major >= RELEASES["2024.1"] or (major in HYPERV_REMOVED_IN and version >= HYPERV_REMOVED_IN[major])
        if removed:
            features = [f for f in features if f[0] not in ("evmcs", "reenlightenment")]
    return features


def explain(props: dict, *, nova: str = "master", virt_type: str = "kvm") -> Explanation:
    version = nova_version(nova)
    props = as_nova_reads(props)
    number = version[0]
    windows = props.get("os_type") == "windows"  # the raw string, as Nova compares it
    autoselect = number >= AUTOSELECT_FROM
    uefi = props.get("hw_firmware_type") == "uefi"
    secure = props.get("os_secure_boot") == "required"
    hidden = number >= MEASURED_FROM and strutils.bool_from_string(props.get("img_hide_hypervisor_id"))
    domain = ET.Element("domain", type=virt_type)
    _os(domain, props, autoselect=autoselect)
    features = ET.SubElement(domain, "features")
    if uefi and secure and not autoselect:  # with a pflash loader, Nova turned SMM on itself, first of all
        ET.SubElement(features, "smm", state="on")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    enlightenments: list[str] = []
    if windows and virt_type in ("kvm", "qemu"):
        hyperv = ET.SubElement(features, "hyperv")
        for name, extra in hyperv_features(version):
            ET.SubElement(hyperv, name, state="on", **extra)
            enlightenments.append(name)
            if name == "spinlocks" and hidden:
                ET.SubElement(hyperv, "vendor_id", state="on", value=HIDDEN_VENDOR_ID)
    if number >= MEASURED_FROM and virt_type in ("kvm", "qemu"):
        ET.SubElement(features, "vmcoreinfo")
    if hidden:
        ET.SubElement(ET.SubElement(features, "kvm"), "hidden", state="on")
    clock = ET.SubElement(domain, "clock", offset="localtime" if windows else "utc")
    if virt_type == "kvm":
        ET.SubElement(clock, "timer", name="pit", tickpolicy="delay")
        ET.SubElement(clock, "timer", name="rtc", tickpolicy="catchup")
        hpet = strutils.bool_from_string(props.get("hw_time_hpet"))  # as Nova reads it: yes, 1, on, true ...
        ET.SubElement(clock, "timer", name="hpet", present="yes" if hpet else "no")
        if windows and number >= RELEASES["kilo"]:
            ET.SubElement(clock, "timer", name="hypervclock", present="yes")
            enlightenments.append("hypervclock")
    _devices(domain, props, number)
    ET.indent(domain)
    missing = {k: v for k, v in RECOMMENDED_WINDOWS.items() if props.get(k) != v}
    return Explanation(nova, ET.tostring(domain, encoding="unicode"), tuple(enlightenments), missing,
                       ".".join(str(part) for part in version), _limitations(props, version))


def _limitations(props: dict, version: tuple[int, int, int]) -> tuple[str, ...]:
    """What this output does not show as the real Nova would, said on the output itself."""
    shown = ".".join(str(part) for part in version) if version[1] != 99 else f"{version[0]}.x"
    notes = []
    if version[0] < MEASURED_FROM:
        notes.append(f"Nova {shown} was not compared with its real driver: the enlightenments follow its history, the "
                     "rest is the 2023.1 model")
    elif version != COMPARED_HERE and version not in MEASURED:
        notes.append(f"Nova {shown} itself was not measured; it is modelled from the point releases around it")
    if props.get("hw_tpm_version"):
        notes.append("the vTPM's <encryption secret=...> is not shown: Nova creates that secret when the server is spawned")
    if any(key.startswith("hw_cpu_") for key in props):
        notes.append("the CPU topology is not shown: it follows the flavor's vCPUs, which an image does not name")
    if props.get("hw_firmware_type") == "uefi" and AUTOSELECT_FROM > version[0] >= MEASURED_FROM:
        notes.append("the OVMF file names in <loader> and <nvram> are the host's firmware descriptors' choice; the usual "
                     f"Debian/Ubuntu names are shown ({OVMF})")
    return tuple(notes)


def _os(domain: ET.Element, props: dict, *, autoselect: bool) -> None:
    uefi = props.get("hw_firmware_type") == "uefi"
    secure = props.get("os_secure_boot") == "required"
    os_el = ET.SubElement(domain, "os", **({"firmware": "efi"} if uefi and autoselect else {}))
    if uefi and autoselect:  # libvirt picks the firmware image that has the features asked for
        ET.SubElement(ET.SubElement(os_el, "firmware"), "feature", name="secure-boot", enabled="yes" if secure else "no")
    ET.SubElement(os_el, "type", machine=props.get("hw_machine_type", "pc")).text = "hvm"
    if uefi and autoselect:
        ET.SubElement(os_el, "loader", secure="yes" if secure else "no")
    elif uefi:  # Nova names the firmware file and its variables template itself
        code = "OVMF_CODE.secboot.fd" if secure else "OVMF_CODE.fd"
        ET.SubElement(os_el, "loader", readonly="yes", type="pflash", secure="yes" if secure else "no").text = f"{OVMF}/{code}"
        ET.SubElement(os_el, "nvram", template=f"{OVMF}/{'OVMF_VARS.ms.fd' if secure else 'OVMF_VARS.fd'}")


def _devices(domain: ET.Element, props: dict, number: int) -> None:
    devices = ET.SubElement(domain, "devices")
    bus = props.get("hw_disk_bus", "virtio")
    disk = ET.SubElement(devices, "disk", type="file", device="disk")
    ET.SubElement(disk, "target", dev="vda" if bus == "virtio" else "sda", bus=bus)
    if bus == "scsi" and props.get("hw_scsi_model"):  # without it Nova writes no controller: libvirt's default
        ET.SubElement(devices, "controller", type="scsi", index="0", model=props["hw_scsi_model"])
    nic = ET.SubElement(devices, "interface", type="bridge")
    ET.SubElement(nic, "model", type=props.get("hw_vif_model", "virtio"))
    if props.get("hw_tpm_version"):
        tpm = ET.SubElement(devices, "tpm", model=props.get("hw_tpm_model", "tpm-tis"))
        ET.SubElement(tpm, "backend", type="emulator", version=props["hw_tpm_version"])
    video = ET.SubElement(devices, "video")
    ET.SubElement(video, "model", type=props.get("hw_video_model") or _default_video(props, number))
    if number >= MEASURED_FROM:  # with graphics on and pointer_model=usbtablet, Nova's defaults
        input_bus = props.get("hw_input_bus") or "usb"
        ET.SubElement(devices, "input", type="tablet", bus=input_bus)
        if props.get("hw_input_bus"):
            ET.SubElement(devices, "input", type="keyboard", bus=input_bus)
    if agent_channel(props):
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")


def agent_channel(props: dict) -> bool:
    """Whether Nova gives the guest the QEMU guest agent's channel: a boolean property, read as Nova reads it."""
    return strutils.bool_from_string(props.get("hw_qemu_guest_agent"))


def _default_video(props: dict, number: int) -> str:
    if number >= RELEASES["yoga"]:
        return "virtio"  # on x86 since Yoga, whatever the guest
    return "cirrus" if props.get("os_type") != "windows" else "vga"


def explain_properties(properties: dict, report, *, nova: str) -> Explanation:
    """Explain a property set (a manifest's, rendered by the chain) into the report."""
    return record(report, explain(properties, nova=nova))


def explain_image(target, image_id: str, report, *, nova: str) -> Explanation:
    report.target = target.to_dict()
    try:
        return record(report, explain(custom_properties(fetch_image(target, image_id)), nova=nova))
    except NovaRefuses as refused:
        raise NovaRefuses(f"image {image_id}: {refused}") from None


def record(report, explanation: Explanation) -> Explanation:
    report.details["explain"] = {"nova": explanation.release, "version": explanation.version, "xml": explanation.xml,
                                 "enlightenments": list(explanation.enlightenments),
                                 "recommended_additions": explanation.recommended_additions,
                                 "limitations": list(explanation.limitations)}
    report.ok = True
    return explanation
