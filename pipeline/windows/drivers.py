"""The virtio drivers for Windows: names, INF files, PCI ids, and which virtio-win OS directory fits a Windows.

One catalogue for the whole project: the bake's element scripts, inspection and the synthetic virtio-win
ISO all read it, so they cannot disagree about what "viostor for Server 2019" means.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCSI_ADAPTER_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
STAGING_DIR = r"Windows\Drivers\VirtIO"  # where every selected package is copied; appended to DevicePath
DRIVER_VER = re.compile(r"^\s*DriverVer\s*=\s*([0-9/]+)\s*,\s*([0-9.]+)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class VirtioDriver:
    directory: str  # top directory on the virtio-win ISO
    inf: str  # INF file name (also the .sys/.cat stem)
    device_class: str
    hardware_ids: tuple[str, ...] = ()  # PCI ids, legacy then modern (boot drivers only need them)
    boot: bool = False  # the guest boots from a disk behind it
    configuration: str = ""  # the INF install section PnP binds (boot drivers: registered offline)
    client_only_from: str = ""  # first OS directory it exists for, when newer than the rest

    @property
    def service(self) -> str:
        return self.inf


DRIVERS: dict[str, VirtioDriver] = {
    d.directory: d
    for d in (
        VirtioDriver("viostor", "viostor", "SCSIAdapter", (
            "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"),
            boot=True, configuration="rhelscsi_inst"),
        VirtioDriver("vioscsi", "vioscsi", "SCSIAdapter", (
            "PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01"),
            boot=True, configuration="scsi_inst"),
        VirtioDriver("NetKVM", "netkvm", "Net"),
        VirtioDriver("Balloon", "balloon", "System"),
        VirtioDriver("vioserial", "vioser", "System"),
        VirtioDriver("viorng", "viorng", "System"),
        VirtioDriver("vioinput", "vioinput", "HIDClass"),
        VirtioDriver("pvpanic", "pvpanic", "System"),
        VirtioDriver("qemufwcfg", "qemufwcfg", "System", client_only_from="w10"),
    )
}
DEFAULT_SELECTION = ("viostor", "vioscsi", "NetKVM", "Balloon", "vioserial", "viorng", "vioinput", "pvpanic", "qemufwcfg")
BOOT_DRIVERS = tuple(name for name, d in DRIVERS.items() if d.boot)

# virtio-win's OS directories, oldest first; which exist depends on the release.
OS_DIRECTORIES = ("w7", "2k8R2", "w8", "2k12", "w8.1", "2k12R2", "w10", "2k16", "2k19", "2k22", "w11", "2k25")
# A newer Windows may use the previous generation's build when a release has no directory of its own.
OS_FALLBACKS = {"w11": ("w10",), "2k25": ("2k22",)}
ARCHES = {"AMD64": "amd64", "X86": "x86", "ARM64": "ARM64"}


def os_directory(major: int, minor: int, build: int, server: bool) -> str:
    """The virtio-win OS directory for a Windows, from what its registry says it is."""
    if (major, minor) == (6, 1):
        return "2k8R2" if server else "w7"
    if (major, minor) == (6, 2):
        return "2k12" if server else "w8"
    if (major, minor) == (6, 3):
        return "2k12R2" if server else "w8.1"
    if major == 10:
        if not server:
            return "w11" if build >= 22000 else "w10"
        for first_build, directory in ((26100, "2k25"), (20348, "2k22"), (17763, "2k19")):
            if build >= first_build:
                return directory
        return "2k16"
    raise ValueError(f"Windows {major}.{minor} (build {build}) has no virtio-win drivers")


def driver_version(inf_text: str) -> tuple[str, str] | None:
    """(date, version) from an INF's DriverVer line."""
    match = DRIVER_VER.search(inf_text)
    return (match.group(1), match.group(2)) if match else None


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())
