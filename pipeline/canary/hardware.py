"""The virtual machine Nova gives an image, as the QEMU runner's VmSpec.

Read from explain's domain XML, the same derivation `invoke explain` shows, so the machine the canary boots
and the one explain describes cannot drift apart: machine type, firmware and Secure Boot, TPM, disk bus and
controller, NIC and video model, the clock, the guest agent's channel and the Hyper-V enlightenments.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from pipeline.build.vm import Accelerator, VmSpec, is_q35
from pipeline.common.errors import BakeryError
from pipeline.common.sinks import machine_type
from pipeline.properties.explain import NovaRefuses, explain

NICS = {"virtio": "virtio-net-pci", "e1000": "e1000", "e1000e": "e1000e", "rtl8139": "rtl8139", "ne2k_pci": "ne2k_pci",
        "pcnet": "pcnet"}
TPM_MODELS = {"tpm-tis": "tpm-tis", "tpm-crb": "tpm-crb"}
VIDEO = {"virtio": "virtio", "vga": "std", "cirrus": "cirrus", "qxl": "qxl", "vmvga": "vmware", "none": "none"}
HYPERV = {"relaxed": "hv-relaxed", "vapic": "hv-vapic", "spinlocks": "hv-spinlocks=0x1fff", "vpindex": "hv-vpindex",
          "runtime": "hv-runtime", "synic": "hv-synic", "reset": "hv-reset", "frequencies": "hv-frequencies",
          "reenlightenment": "hv-reenlightenment", "tlbflush": "hv-tlbflush", "ipi": "hv-ipi", "evmcs": "hv-evmcs"}


@dataclass(frozen=True)
class Hardware:
    """What the canary boots on, and what it could not give the guest here (said, not hidden)."""

    vm: VmSpec
    domain_xml: str
    enlightenments: tuple[str, ...]  # asked for by the properties
    accelerator: str  # kvm | tcg
    not_applied: str = ""  # why some of it is missing (TCG has no Hyper-V enlightenments)

    @property
    def summary(self) -> str:
        """One line for people: what the guest gets, and how it will be known to be ready."""
        vm = self.vm
        return (f"{vm.machine}, {vm.firmware}{' + Secure Boot' if vm.secure_boot else ''}{' + TPM ' + vm.tpm_version if vm.tpm else ''}, "
                f"disk {vm.disk_bus}, nic {vm.nic}, video {vm.video}; ready by {vm.ready}")

    def to_dict(self) -> dict:
        vm = self.vm
        return {"accelerator": self.accelerator, "machine": vm.machine, "firmware": vm.firmware, "secure_boot": vm.secure_boot, "tpm": vm.tpm_version if vm.tpm else None,
                "disk_bus": vm.disk_bus, "nic": vm.nic, "video": vm.video, "localtime": vm.localtime, "hpet": vm.hpet,
                "guest_agent": vm.guest_agent, "hyperv": list(vm.hyperv), "enlightenments": list(self.enlightenments),
                "not_applied": self.not_applied or None}


def derive(properties: dict[str, str], *, nova: str, accel: Accelerator, base: VmSpec, label: str) -> Hardware:
    """The VmSpec for `properties` as Nova (release `nova`) would build the guest; `base` carries the rest
    (limits, firmware overrides; the disk is the overlay the boot creates)."""
    try:
        explanation = explain(properties, nova=nova, virt_type="kvm" if accel.name == "kvm" else "qemu")
    except NovaRefuses as refused:
        raise NovaRefuses(f"{label}: {refused}") from None
    domain = ET.fromstring(explanation.xml)
    os_el, devices = domain.find("os"), domain.find("devices")
    machine = machine_type(label, os_el.find("type").get("machine"))  # lands in -machine: whatever lint said, checked here
    q35 = is_q35(machine)
    loader = os_el.find("loader")
    uefi = os_el.get("firmware") == "efi" or loader is not None  # auto-selected, or a pflash loader Nova names
    feature = os_el.find("firmware/feature[@name='secure-boot']")
    secure = (feature is not None and feature.get("enabled") == "yes") or (loader is not None and loader.get("secure") == "yes")
    if secure and not q35:
        raise BakeryError(f"{label}: os_secure_boot=required needs hw_machine_type=q35 (SMM): libvirt refuses it on {machine}")
    tpm = devices.find("tpm")
    hyperv = tuple(HYPERV[child.tag] for child in domain.find("features/hyperv") or [] if child.tag in HYPERV)
    if domain.find("clock/timer[@name='hypervclock']") is not None:
        hyperv += ("hv-time",)
    clock = domain.find("clock")
    hpet = domain.find("clock/timer[@name='hpet']")
    vm = replace(
        base, disk_bus=_disk_bus(devices, q35, label), machine=machine,
        firmware="uefi" if uefi else "bios", secure_boot=secure, tpm=tpm is not None,
        tpm_model=_mapped(TPM_MODELS, tpm.get("model"), "hw_tpm_model", label) if tpm is not None else "", tpm_version=tpm.find("backend").get("version") if tpm is not None else "2.0",
        nic=_mapped(NICS, devices.find("interface/model").get("type"), "hw_vif_model", label),
        video=_mapped(VIDEO, devices.find("video/model").get("type"), "hw_video_model", label),
        localtime=clock.get("offset") == "localtime", hpet=hpet is None or hpet.get("present") == "yes",
        hyperv=hyperv, guest_agent=devices.find("channel/target[@name='org.qemu.guest_agent.0']") is not None,
        cdroms=(), boot_cdrom=False,
    )
    not_applied = ""
    if hyperv and accel.name != "kvm":
        not_applied = f"the Hyper-V enlightenments ({len(hyperv)}) need KVM; this canary ran under {accel.name} ({accel.reason})"
    return Hardware(vm, explanation.xml, explanation.enlightenments, accel.name, not_applied)


def _disk_bus(devices: ET.Element, q35: bool, label: str) -> str:
    bus = devices.find("disk/target").get("bus")
    if bus == "virtio":
        return "virtio-blk"
    if bus == "scsi":
        controller = devices.find("controller[@type='scsi']")
        model = controller.get("model") if controller is not None else None
        if model in (None, "lsilogic"):
            return "lsi"  # libvirt's default SCSI controller on x86 when Nova names none: an LSI 53C895A
        if model == "virtio-scsi":
            return "virtio-scsi"
        raise BakeryError(f"{label}: hw_scsi_model={model} cannot be booted by the canary (virtio-scsi or none)")
    if bus == "ide" and q35:
        raise BakeryError(f"{label}: hw_disk_bus=ide with hw_machine_type=q35: q35 has no IDE controller, libvirt refuses "
                          f"the guest and Nova fails the boot; use sata")
    if bus in ("sata", "ide"):
        return bus
    raise BakeryError(f"{label}: hw_disk_bus={bus} cannot be booted by the canary (virtio, scsi, sata or ide)")


def _mapped(table: dict[str, str], value: str, prop: str, label: str) -> str:
    if value not in table:
        raise BakeryError(f"{label}: {prop}={value} has no QEMU device the canary knows; expected one of {', '.join(table)}")
    return table[value]
