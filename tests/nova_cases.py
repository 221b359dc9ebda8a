"""The property sets explain is compared on with real Nova drivers, and what of a domain they decide: shared by
the live comparison (test_explain_real_nova, nova 34 in this venv) and the recorded one (older releases)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

CASES = {
    "windows-bios": {"os_type": "windows", "hw_disk_bus": "virtio"},
    "windows-uefi-secure-scsi": {"os_type": "windows", "hw_firmware_type": "uefi", "hw_machine_type": "q35", "os_secure_boot": "required",
                                 "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi", "hw_vif_model": "e1000"},
    "scsi-without-model": {"os_type": "windows", "hw_disk_bus": "scsi"},
    "os-distro-only": {"os_distro": "windows", "hw_disk_bus": "virtio"},  # the CLOCK_WATCHDOG_TIMEOUT images
    "os-type-capitalised": {"os_type": "Windows"},
    "windows-hpet-video": {"os_type": "windows", "hw_time_hpet": "true", "hw_video_model": "vga"},
    "guest-agent": {"os_type": "windows", "hw_qemu_guest_agent": "yes", "hw_disk_bus": "sata"},
    "guest-agent-off": {"os_type": "windows", "hw_qemu_guest_agent": "no"},
    "guest-agent-true": {"os_type": "windows", "hw_qemu_guest_agent": "true"},
    "hpet-yes": {"os_type": "windows", "hw_time_hpet": "yes"},
    "hide-hypervisor-id": {"os_type": "windows", "img_hide_hypervisor_id": "yes"},
    "uefi-without-secure-boot": {"os_type": "windows", "hw_firmware_type": "uefi", "hw_machine_type": "q35"},
    "video-qxl": {"os_type": "windows", "hw_video_model": "qxl"},
    "video-virtio": {"os_type": "windows", "hw_video_model": "virtio"},
    "input-virtio": {"os_type": "windows", "hw_input_bus": "virtio"},
    "machine-pc": {"os_type": "windows", "hw_machine_type": "pc", "hw_disk_bus": "sata"},
    "tpm-2-crb": {"os_type": "windows", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb"},
    "tpm-1.2-tis": {"os_type": "windows", "hw_tpm_version": "1.2", "hw_tpm_model": "tpm-tis"},
    "cpu-topology": {"os_type": "windows", "hw_cpu_max_sockets": "1", "hw_cpu_sockets": "1"},  # the topology itself: a known limitation
    # the catalogue's families, as their manifests render them (manifests/*.yaml; the install ones render the same)
    "catalog-w10entx64": {"os_type": "windows", "os_distro": "windows", "hw_disk_bus": "virtio", "hw_vif_model": "virtio",
                          "hw_machine_type": "q35", "hw_firmware_type": "bios", "hw_qemu_guest_agent": "yes"},
    "catalog-w11entx64": {"os_type": "windows", "os_distro": "windows", "hw_firmware_type": "uefi", "hw_machine_type": "q35",
                          "hw_disk_bus": "virtio", "os_secure_boot": "required", "hw_tpm_version": "2.0", "hw_tpm_model": "tpm-crb",
                          "hw_vif_model": "virtio", "hw_qemu_guest_agent": "yes"},
    "catalog-w7entx64": {"os_type": "windows", "os_distro": "windows", "hw_firmware_type": "bios", "hw_machine_type": "pc",
                         "hw_disk_bus": "virtio", "hw_vif_model": "virtio", "hw_qemu_guest_agent": "yes"},
    "catalog-w2022stdx64": {"os_type": "windows", "os_distro": "windows", "hw_disk_bus": "scsi", "hw_scsi_model": "virtio-scsi",
                            "hw_vif_model": "virtio", "hw_machine_type": "q35", "hw_firmware_type": "uefi", "hw_qemu_guest_agent": "yes"},
}


def decided(xml: str) -> dict:
    """What the image properties decide in a domain, comparable between the two."""
    domain = ET.fromstring(xml)
    os_el, features, devices = domain.find("os"), domain.find("features"), domain.find("devices")
    disk = devices.find("disk/target")
    controller = devices.find("controller[@type='scsi']")
    loader = os_el.find("loader")
    secure_boot = os_el.find("firmware/feature[@name='secure-boot']")
    return {
        "firmware": os_el.get("firmware"), "machine": os_el.find("type").get("machine"),
        "loader_secure": loader.get("secure") if loader is not None else None,
        "secure_boot_feature": secure_boot.get("enabled") if secure_boot is not None else None,
        "hyperv": [(child.tag, child.get("retries"), child.get("value")) for child in features.find("hyperv") or []],
        "kvm_hidden": [h.get("state") for h in features.findall("kvm/hidden")],
        "inputs": [(i.get("type"), i.get("bus")) for i in devices.findall("input")],
        "features": sorted(child.tag for child in features if child.tag != "hyperv"),
        "clock": domain.find("clock").get("offset"),
        "timers": {t.get("name"): t.get("present") for t in domain.findall("clock/timer")},
        "disk": (disk.get("bus"), disk.get("dev")),
        "scsi_controller": controller.get("model") if controller is not None else None,
        "nic": devices.find("interface/model").get("type"),
        "video": devices.find("video/model").get("type"),
        "agent_channel": [t.get("type") for t in devices.findall("channel/target[@name='org.qemu.guest_agent.0']")],
        "tpm": [(t.get("model"), t.find("backend").get("type"), t.find("backend").get("version")) for t in devices.findall("tpm")],
    }
