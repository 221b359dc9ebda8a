"""A synthetic, format-real virtio-win ISO: ISO9660 + Joliet, the real `<driver>/<os>/<arch>/` layout,
INF files with real DriverVer lines, and OS directories that depend on the release.

The drivers inside are placeholders (clearly marked), so the bake can be tested end to end without the
real ISO, which cannot be downloaded on the build machines.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.isomedia import write_iso as write_iso_files
from pipeline.windows.drivers import DRIVERS, OS_DIRECTORIES, VirtioDriver


@dataclass(frozen=True)
class VirtioRelease:
    version: str  # "0.1.240"
    date: str  # MM/DD/YYYY, as INF files write it
    os_dirs: tuple[str, ...]

    @property
    def driver_version(self) -> str:
        patch = int(self.version.rsplit(".", 1)[-1])
        return f"100.{patch // 3}.104.{patch}00"

    @property
    def label(self) -> str:
        return f"virtio-win-{self.version}"


RELEASES = {
    r.version: r
    for r in (
        # The last generation that still ships Windows 7 / Server 2008 R2 drivers.
        VirtioRelease("0.1.173", "07/01/2019", OS_DIRECTORIES[: OS_DIRECTORIES.index("2k19") + 1]),
        VirtioRelease("0.1.240", "07/11/2023", ("w10", "2k16", "2k19", "2k22", "w11")),
        VirtioRelease("0.1.262", "08/01/2024", ("w10", "2k16", "2k19", "2k22", "w11", "2k25")),
    )
}
ARCHES = ("amd64", "x86")
# The device setup classes' GUIDs (Microsoft's system-defined classes), as real INFs carry them in [Version].
CLASS_GUIDS = {"SCSIAdapter": "{4D36E97B-E325-11CE-BFC1-08002BE10318}", "Net": "{4D36E972-E325-11CE-BFC1-08002BE10318}",
               "System": "{4D36E97D-E325-11CE-BFC1-08002BE10318}", "HIDClass": "{745A17A0-74D3-11D0-B6FE-00A0C90F57DA}"}
MARKER = "SYNTHETIC virtio-win made by the image bakery for tests and the demo: the drivers are placeholders"


PE_MACHINES = {"amd64": 0x8664, "x86": 0x014C}


def pe_stub(machine: int, payload: bytes) -> bytes:
    """The headers Windows' loader and the bakery's inspection read first (MZ, e_lfanew, PE\\0\\0, the COFF
    machine), then the placeholder: a file that is not a PE image of the right architecture is no driver."""
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", machine, 0, 0, 0, 0, 0, 0x0022)
    return bytes(dos) + coff + payload


def driver_files(release: VirtioRelease, driver: VirtioDriver, os_dir: str, arch: str) -> dict[str, bytes]:
    """The files of one driver package: INF (with DriverVer), SYS and CAT placeholders."""
    inf = (
        f"; {MARKER}\r\n"
        "[Version]\r\n"
        'Signature="$WINDOWS NT$"\r\n'
        f"Class={driver.device_class}\r\n"
        f"ClassGuid={CLASS_GUIDS.get(driver.device_class, CLASS_GUIDS['System'])}\r\n"
        "Provider=%VENDOR%\r\n"
        f"DriverVer = {release.date},{release.driver_version}\r\n"
        f"CatalogFile={driver.inf}.cat\r\n"
        "\r\n[Strings]\r\n"
        'VENDOR = "Red Hat, Inc."\r\n'
        f'DiskId1 = "VirtIO {driver.directory} for {os_dir} {arch}"\r\n'
    ).encode()
    seed = f"{release.version}/{driver.directory}/{os_dir}/{arch}".encode()
    body = pe_stub(PE_MACHINES[arch], f" {MARKER} ({seed.decode()})\n".encode() + hashlib.sha256(seed).digest() * 8)
    return {f"{driver.inf}.inf": inf, f"{driver.inf}.sys": body, f"{driver.inf}.cat": b"synthetic catalog\n" + seed}


def tree(release: VirtioRelease) -> dict[str, bytes]:
    """Every file of the ISO, by its Joliet path."""
    files: dict[str, bytes] = {}
    for driver in DRIVERS.values():
        for os_dir in release.os_dirs:
            if driver.client_only_from and OS_DIRECTORIES.index(os_dir) < OS_DIRECTORIES.index(driver.client_only_from):
                continue
            for arch in ARCHES:
                for name, data in driver_files(release, driver, os_dir, arch).items():
                    files[f"/{driver.directory}/{os_dir}/{arch}/{name}"] = data
    files["/guest-agent/qemu-ga-x86_64.msi"] = f"{MARKER}\nqemu-ga {release.version} x86_64\n".encode()
    files["/guest-agent/qemu-ga-i386.msi"] = f"{MARKER}\nqemu-ga {release.version} i386\n".encode()
    files["/virtio-win_license.txt"] = f"{MARKER}\n".encode()
    files["/SYNTHETIC.txt"] = f"{MARKER}\n{release.label}\n".encode()
    return files


def write_iso(path: Path, version: str = "0.1.240") -> Path:
    release = RELEASES[version]
    return write_iso_files(path, {name.lstrip("/"): data for name, data in tree(release).items()}, label="VIRTIO_WIN",
                           long_label=release.label)


def write_tree(directory: Path, version: str = "0.1.240") -> Path:
    """The same content as a plain directory (a virtio-win source may be an unpacked tree)."""
    for joliet_path, data in tree(RELEASES[version]).items():
        target = directory / joliet_path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return directory
