"""What Nova's libvirt driver would put in the domain XML for a property set, per Nova release.

The enlightenment set changed over time (nova/virt/libvirt/driver.py history): relaxed, vapic and
spinlocks from the start of Windows support; hypervclock from Kilo (bug 1400315); vpindex, runtime,
synic, reset, frequencies, tlbflush, ipi, evmcs and reenlightenment in Zed; evmcs dropped again in
2023.2 (bug 2009280, broke AMD hosts) and reenlightenment in 2024.1 (bug 2046549, broke live migration).

For 2026.2 the whole output is compared with what the real driver (nova 34 from PyPI, run with the fake
libvirt of its own unit tests) generates for the same properties (tests/test_explain_real_nova.py): besides
the enlightenments, the vmcoreinfo feature, firmware auto-selection for UEFI (no pflash path, Secure Boot
as a firmware feature, no <smm> of Nova's own), virtio video by default, and a SCSI controller only when
hw_scsi_model names one. Earlier releases keep what their history says; what is marked "verified from" was
seen in 2026.2 and is not claimed for releases that were not run here.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from oslo_utils import strutils

from pipeline.common.errors import BakeryError
from pipeline.glance.images import custom_properties, fetch_image

# (release name, ordinal) - the ordinal is Nova's major version.
RELEASES = {
    "juno": 10, "kilo": 11, "liberty": 12, "mitaka": 13, "newton": 14, "ocata": 15, "pike": 16, "queens": 17,
    "rocky": 18, "stein": 19, "train": 20, "ussuri": 21, "victoria": 22, "wallaby": 23, "xena": 24, "yoga": 25,
    "zed": 26, "2023.1": 27, "2023.2": 28, "2024.1": 29, "2024.2": 30, "2025.1": 31, "2025.2": 32, "2026.1": 33,
    "2026.2": 34,
}
VERIFIED_FROM = 34  # the release run here (nova 34): firmware auto-selection and vmcoreinfo are claimed from it on
ALIASES = {"antelope": "2023.1", "bobcat": "2023.2", "caracal": "2024.1", "dalmatian": "2024.2", "epoxy": "2025.1",
           "flamingo": "2025.2", "gazpacho": "2026.1", "hibiscus": "2026.2", "2017": "pike", "master": "2026.2"}
RECOMMENDED_WINDOWS = {"os_type": "windows", "hw_machine_type": "q35", "hw_firmware_type": "uefi", "hw_disk_bus": "virtio",
                       "hw_vif_model": "virtio", "hw_video_model": "virtio", "hw_qemu_guest_agent": "yes"}


@dataclass(frozen=True)
class Explanation:
    release: str
    xml: str
    enlightenments: tuple[str, ...]
    recommended_additions: dict[str, str]


def release_number(name: str) -> int:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in RELEASES:
        raise BakeryError(f"--nova: unknown release {name!r}; expected one of {', '.join(list(RELEASES) + list(ALIASES))}")
    return RELEASES[key]


def hyperv_features(number: int) -> list[tuple[str, dict]]:
    features = [("relaxed", {}), ("vapic", {}), ("spinlocks", {"retries": "8191"})]
    if number >= RELEASES["zed"]:
        features += [("vpindex", {}), ("runtime", {}), ("synic", {}), ("reset", {}), ("frequencies", {}),
                     ("reenlightenment", {}), ("tlbflush", {}), ("ipi", {}), ("evmcs", {})]
    if number >= RELEASES["2023.2"]:
        features = [f for f in features if f[0] != "evmcs"]
    if number >= RELEASES["2024.1"]:
        features = [f for f in features if f[0] != "reenlightenment"]
    return features


def explain(props: dict, *, nova: str = "master", virt_type: str = "kvm") -> Explanation:
    number = release_number(nova)
    windows = props.get("os_type") == "windows"  # the raw string, as Nova compares it
    domain = ET.Element("domain", type=virt_type)
    _os(domain, props, autoselect=number >= VERIFIED_FROM)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    enlightenments: list[str] = []
    if windows and virt_type in ("kvm", "qemu"):
        hyperv = ET.SubElement(features, "hyperv")
        for name, extra in hyperv_features(number):
            ET.SubElement(hyperv, name, state="on", **extra)
            enlightenments.append(name)
    if number >= VERIFIED_FROM and virt_type in ("kvm", "qemu"):
        ET.SubElement(features, "vmcoreinfo")
    elif props.get("os_secure_boot") == "required":  # with a pflash loader, Nova turned SMM on itself
        ET.SubElement(features, "smm", state="on")
    clock = ET.SubElement(domain, "clock", offset="localtime" if windows else "utc")
    if virt_type == "kvm":
        ET.SubElement(clock, "timer", name="pit", tickpolicy="delay")
        ET.SubElement(clock, "timer", name="rtc", tickpolicy="catchup")
        ET.SubElement(clock, "timer", name="hpet", present="yes" if props.get("hw_time_hpet") == "true" else "no")
        if windows and number >= RELEASES["kilo"]:
            ET.SubElement(clock, "timer", name="hypervclock", present="yes")
            enlightenments.append("hypervclock")
    _devices(domain, props, number)
    ET.indent(domain)
    missing = {k: v for k, v in RECOMMENDED_WINDOWS.items() if props.get(k) != v}
    return Explanation(nova, ET.tostring(domain, encoding="unicode"), tuple(enlightenments), missing)


def _os(domain: ET.Element, props: dict, *, autoselect: bool) -> None:
    uefi = props.get("hw_firmware_type") == "uefi"
    secure = "yes" if props.get("os_secure_boot") == "required" else "no"
    os_el = ET.SubElement(domain, "os", **({"firmware": "efi"} if uefi else {}))
    if uefi and autoselect:  # libvirt picks the firmware image that has the features asked for
        ET.SubElement(ET.SubElement(os_el, "firmware"), "feature", name="secure-boot", enabled=secure)
    ET.SubElement(os_el, "type", machine=props.get("hw_machine_type", "pc")).text = "hvm"
    if uefi:
        ET.SubElement(os_el, "loader", secure=secure, **({} if autoselect else {"readonly": "yes", "type": "pflash"}))


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
    return record(report, explain(custom_properties(fetch_image(target, image_id)), nova=nova))


def record(report, explanation: Explanation) -> Explanation:
    report.details["explain"] = {"nova": explanation.release, "xml": explanation.xml,
                                 "enlightenments": list(explanation.enlightenments),
                                 "recommended_additions": explanation.recommended_additions}
    report.ok = True
    return explanation
