"""What Nova's ImageMetaProps makes of an image's properties (nova/objects/image_meta.py, fields.py): the values it
accepts for its enum fields, and how it rewrites some before comparing. Shared by lint and explain."""

from __future__ import annotations

import unicodedata

from pipeline.common.errors import BakeryError

# Nova reads an image's properties into ImageMetaProps (nova/objects/image_meta.py) before it builds a domain; an
# enum field with a value outside its list fails there ("Field value X is invalid") and the server is not created.
# These are nova 34's lists (tests/test_explain.py compares them with the installed nova), for the fields explain
# reads and those lint checks where Glance's metadefs lack them or differ; a value added in a later release is
# refused by older ones too, which is not modelled.
NOVA_ENUMS = {
    "hw_disk_bus": ("fdc", "ide", "sata", "scsi", "usb", "virtio", "xen", "lxc", "uml"),
    "hw_firmware_type": ("uefi", "bios"),
    "hw_input_bus": ("usb", "virtio"),
    "hw_scsi_model": ("buslogic", "ibmvscsi", "lsilogic", "lsisas1068", "lsisas1078", "virtio-scsi", "vmpvscsi"),
    "hw_tpm_model": ("tpm-tis", "tpm-crb"),
    "hw_tpm_version": ("1.2", "2.0"),
    "hw_video_model": ("cirrus", "qxl", "vga", "vmvga", "xen", "virtio", "gop", "none", "bochs"),
    "hw_vif_model": ("virtio", "ne2k_pci", "pcnet", "rtl8139", "e1000", "e1000e", "netfront", "spapr-vlan", "lan9118", "sriov",
                     "vmxnet", "vmxnet3", "igb"),
    "os_secure_boot": ("required", "disabled", "optional"),
    "os_type": ("linux", "windows"),  # OSType compares lowercased: "Windows" passes (and gets no enlightenments)
    # img_hv_type, read from hypervisor_type: metadefs' "powervm" is not among them (Nova says "phyp")
    "hypervisor_type": ("baremetal", "bhyve", "docker", "fake", "hyperv", "ironic", "kqemu", "kvm", "lxc", "lxd", "openvz",
                        "parallels", "phyp", "qemu", "test", "uml", "vbox", "vz", "vmware", "xen", "zvm", "prsm"),
}
VIF_LEGACY = {"virtuale1000": "e1000", "virtuale1000e": "e1000e", "virtualpcnet32": "pcnet", "virtualsriovethernetcard": "sriov",
              "virtualvmxnet": "vmxnet", "virtualvmxnet3": "vmxnet3"}
SCSI_LEGACY = {"lsilogicsas": "lsisas1068", "paravirtual": "vmpvscsi"}
NOVA_COERCE = {
    "os_type": str.lower,
    "hypervisor_type": lambda value: "xen" if value.lower() == "xapi" else value.lower(),
    "hw_vif_model": lambda value: VIF_LEGACY.get(value.lower(), value.lower()),
    "hw_scsi_model": lambda value: SCSI_LEGACY.get(value.lower(), value.lower()),
}


class NovaRefuses(BakeryError):
    """A property value Nova refuses before it builds a domain; callers say whose (a manifest, an image)."""


def as_nova_reads(props: dict) -> dict:
    """The properties as Nova's ImageMetaProps holds them, or one line for the value it refuses (then there is no
    domain to explain). Its OSType, VIFModel and SCSIModel lowercase first, and the last two map the VMware names
    of old (nova/objects/fields.py): hw_vif_model=VirtualE1000 boots an e1000. os_type stays as written: the
    enlightenments follow the instance's copy of the raw string, which nothing lowercases."""
    read = dict(props)
    for key, allowed in NOVA_ENUMS.items():
        value = props.get(key)
        if value is None:
            continue
        coerced = nova_value(key, value)
        if coerced not in allowed:
            raise NovaRefuses(f"{key}={value!r}: Nova refuses to boot this image (its ImageMetaProps accepts only "
                              f"{', '.join(allowed)})")
        if key not in ("os_type", "hypervisor_type"):  # explain compares the raw os_type; hypervisor_type is not read
            read[key] = coerced
    machine = props.get("hw_machine_type")
    if machine is not None and (not machine or any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in machine)):
        raise NovaRefuses(f"hw_machine_type={machine!r}: libvirt refuses an empty machine type or one with a control character")
    return read


def nova_value(key: str, value: str) -> str:
    """The value as Nova compares it with its list: lowercased and mapped for the fields whose type does so."""
    return NOVA_COERCE[key](value) if key in NOVA_COERCE and isinstance(value, str) else value
