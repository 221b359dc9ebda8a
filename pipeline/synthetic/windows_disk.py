"""Synthetic, format-real Windows disks: a real MBR or GPT, a real NTFS volume holding a Windows tree, and
SYSTEM/SOFTWARE hives in real regf format carrying one Windows generation's version facts.

Built in about a second whatever the virtual size: the image is sparse, mkntfs writes only metadata, and the
volume is filled through the same qemu-storage-daemon + ntfs-3g path the bake uses (no root, no loop device).
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.common.run import require_tool, run
from pipeline.diskimage import fuse
from pipeline.synthetic import standin_windows, virtio_iso
from pipeline.windows import volume
from pipeline.windows.drivers import DRIVERS, os_directory
from pipeline.windows.registry import REG_BINARY, REG_DWORD, REG_EXPAND_SZ, REG_MULTI_SZ, REG_SZ, Hive, empty_hive
from pipeline.windows.software import CBS_PACKAGES, UNINSTALL_KEYS

MiB = 1024 * 1024
GiB = 1024 * MiB
HEALTH_TOOLS_CODE = "{1FC1A6C2-576E-489A-9B4A-92D21F542136}"  # an MSI every fixture lists under Uninstall
MARKER = "SYNTHETIC Windows tree made by the image bakery for tests and the demo: not Windows, not bootable"


@dataclass(frozen=True)
class WindowsRelease:
    key: str
    product_name: str  # as the registry says it (Windows 11 still says "Windows 10 ..." there)
    edition_id: str
    installation_type: str  # Client | Server
    major: int
    minor: int
    build: int
    display_version: str = ""
    csd_version: str = ""
    firmware: str = "bios"  # bios: MBR with a System Reserved partition; uefi: GPT with ESP + MSR
    control_set: int = 1
    older_virtio: str = ""  # a virtio-win version whose drivers are already installed
    arch: str = "AMD64"  # PROCESSOR_ARCHITECTURE: AMD64 or X86
    last_known_good: int | None = None  # a LastKnownGood control set other than control_set (a fallback to boot)
    ubr: int | None = None  # the update build revision (Windows 10 and later)
    # CBS packages as (name, CurrentState): 0x70 installed, 0x50 superseded; what an SBOM lists as updates
    servicing: tuple[tuple[str, int], ...] = ()

    @property
    def current_version(self) -> str:
        return f"{self.major}.{self.minor}" if self.major < 10 else "6.3"

    @property
    def server(self) -> bool:
        return self.installation_type == "Server"


RELEASES = {
    r.key: r
    for r in (
        WindowsRelease("w7", "Windows 7 Enterprise", "Enterprise", "Client", 6, 1, 7601, csd_version="Service Pack 1",
                       servicing=(("Package_for_KB976902~31bf3856ad364e35~amd64~~6.1.1.17514", 0x70),)),
        WindowsRelease("2k8r2", "Windows Server 2008 R2 Standard", "ServerStandard", "Server", 6, 1, 7601, csd_version="Service Pack 1"),
        WindowsRelease("w10", "Windows 10 Enterprise", "Enterprise", "Client", 10, 0, 19045, "22H2", ubr=3803, servicing=(
            ("Package_for_KB5033372~31bf3856ad364e35~amd64~~19041.3803.1.5", 0x70),
            ("Package_for_RollupFix~31bf3856ad364e35~amd64~~19041.3803.1.5", 0x70),
            ("Package_for_KB5032189~31bf3856ad364e35~amd64~~19041.3693.1.5", 0x50))),
        WindowsRelease("2k19", "Windows Server 2019 Standard", "ServerStandard", "Server", 10, 0, 17763, firmware="uefi", control_set=2),
        WindowsRelease("2k22", "Windows Server 2022 Standard", "ServerStandard", "Server", 10, 0, 20348, "21H2", firmware="uefi"),
        WindowsRelease("w11", "Windows 10 Enterprise", "Enterprise", "Client", 10, 0, 22631, "23H2", firmware="uefi"),
    )
}
# The fixture with last year's drivers already installed: the monthly refresh has to replace them.
RELEASES["w10-oldvirtio"] = replace(RELEASES["w10"], key="w10-oldvirtio", older_virtio="0.1.173")
# 32-bit Windows 7: x86 drivers and the i386 guest agent, and architecture i686.
RELEASES["w7-x86"] = replace(RELEASES["w7"], key="w7-x86", arch="X86")
# A Windows 7 whose LastKnownGood is another control set: the one it falls back to after a failed boot.
RELEASES["w7-lkg"] = replace(RELEASES["w7"], key="w7-lkg", last_known_good=2)


def generate(path: Path, release: str | WindowsRelease, *, size: int = 40 * GiB, fmt: str = "raw",
             bootable_with: Path | None = None) -> Path:
    """Write a fixture disk to path (raw, or qcow2 converted from it). With `bootable_with` (where the Debian
    kernel package is kept), the disk also boots the stand-in Windows (standin_windows.py)."""
    spec = RELEASES[release] if isinstance(release, str) else release
    require_tool("sfdisk", "fdisk")
    require_tool("mkntfs", "ntfs-3g")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bakery-fixture-", dir=path.parent) as scratch:
        scratch = Path(scratch)
        raw = scratch / "disk.raw"
        with open(raw, "wb") as disk:
            disk.truncate(size)
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", raw], input=_partition_script(spec).encode())
        layout = volume.read_layout(raw, image_size=size, label_for_errors=str(raw))
        windows_partition = layout.partitions[-1]
        for partition in layout.partitions:
            if _is_ntfs_partition(layout, partition):
                _format_and_fill(raw, partition, spec if partition is windows_partition else None, scratch)
            elif partition.type.upper() == volume.ESP_GPT:
                _efi_system_partition(raw, partition, scratch)
        if bootable_with:
            standin_windows.make_bootable(raw, cache=bootable_with)
        partial = path.with_name(path.name + ".part")
        if fmt == "raw":
            raw.replace(partial)
        else:
            run(["qemu-img", "convert", "-q", "-f", "raw", "-O", fmt, raw, partial], timeout=600)
        partial.replace(path)
    return path


def _partition_script(spec: WindowsRelease) -> str:
    if spec.firmware == "uefi":
        return (
            "label: gpt\nunit: sectors\n\n"
            f"size=100MiB, type={volume.ESP_GPT}, name=\"EFI system partition\"\n"
            f"size=16MiB, type={volume.MSR_GPT}, name=\"Microsoft reserved partition\"\n"
            f"type={volume.BASIC_DATA_GPT}, name=\"Basic data partition\"\n"
        )
    return "label: dos\nunit: sectors\n\nsize=100MiB, type=7, bootable\ntype=7\n"


def _is_ntfs_partition(layout: volume.Layout, partition: volume.Partition) -> bool:
    return partition.type.upper() == volume.BASIC_DATA_GPT if layout.label == "gpt" else partition.type in volume.NTFS_MBR_TYPES


def _format_and_fill(raw: Path, partition: volume.Partition, spec: WindowsRelease | None, scratch: Path) -> None:
    window = scratch / f"part{partition.number}"
    with fuse.exposed(raw, "raw", mountpoint=window, window=partition, writable=True):
        label = "Windows" if spec else "System Reserved"
        run(["mkntfs", "-Q", "-F", "-q", "-L", label, "-p", str(partition.start // 512), "-H", "255", "-S", "63", window])
        with volume.ntfs_mounted(window, scratch / f"mnt{partition.number}", writable=True, label_for_errors=str(raw)) as root:
            (root / "SYNTHETIC.txt").write_text(MARKER + "\n")
            if spec is None:
                (root / "bootmgr").write_bytes(b"synthetic bootmgr\n")
                (root / "Boot").mkdir()
            else:
                _windows_tree(root, spec, scratch)


PE_MACHINES = {"AMD64": 0x8664, "X86": 0x014C, "ARM64": 0xAA64}


def pe_placeholder(arch: str, *, subsystem: int = 3) -> bytes:
    """A program with no code: a DOS stub header, the PE signature, a COFF header with the machine type and
    an optional header (PE32+ for 64-bit, PE32 for x86) naming the subsystem (1 native, 2 GUI, 3 console,
    10 EFI application). Enough for tools that read a binary's architecture (file(1), libguestfs)."""
    wide = arch != "X86"
    dos = bytearray(64)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, len(dos))  # e_lfanew: where the PE header starts
    optional = bytearray(240 if wide else 224)
    struct.pack_into("<H", optional, 0, 0x20B if wide else 0x10B)
    struct.pack_into("<H", optional, 68, subsystem)
    characteristics = 0x0022 if wide else 0x0102  # executable + large-address-aware | 32-bit machine
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", PE_MACHINES[arch], 0, 0, 0, 0, len(optional), characteristics)
    return bytes(dos) + coff + bytes(optional) + MARKER.encode() + b"\n"


def _efi_system_partition(raw: Path, partition: volume.Partition, scratch: Path) -> None:
    """A FAT32 ESP with Windows' boot manager layout (placeholders) and a BCD store, written with mtools (no
    mount): real tools (libguestfs inspection, virt-v2v) mount the ESP and read EFI\\Microsoft\\Boot\\BCD."""
    require_tool("mformat", "mtools")
    window = scratch / f"esp{partition.number}"
    bcd = scratch / "BCD"
    empty_hive(bcd, root_name="NewStoreRoot")
    with Hive(bcd, write=True) as store:
        store.set(r"Description", "KeyName", "BCD00000000")
        store.set(r"Description", "System", 1, REG_DWORD)
        store.ensure(r"Objects\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\Description")  # the Windows Boot Manager object
        store.set(r"Objects\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\Description", "Type", 0x10100002, REG_DWORD)
    placeholder = scratch / "efi-placeholder"
    placeholder.write_bytes(pe_placeholder("AMD64", subsystem=10))  # an EFI application
    with fuse.exposed(raw, "raw", mountpoint=window, window=partition, writable=True):
        run(["mformat", "-i", window, "-F", "-N", "0B5E5A1E", "-v", "SYSTEM", "::"])
        for folder in ("EFI", "EFI/Microsoft", "EFI/Microsoft/Boot", "EFI/Boot"):
            run(["mmd", "-i", window, f"::/{folder}"])
        run(["mcopy", "-i", window, bcd, "::/EFI/Microsoft/Boot/BCD"])
        for target in ("EFI/Microsoft/Boot/bootmgfw.efi", "EFI/Boot/bootx64.efi"):
            run(["mcopy", "-i", window, placeholder, f"::/{target}"])


def _windows_tree(root: Path, spec: WindowsRelease, scratch: Path) -> None:
    system32 = root / "Windows" / "System32"
    for directory in ("config", "drivers", "DriverStore/FileRepository", "../INF", "../Setup/Scripts"):
        (system32 / directory).mkdir(parents=True, exist_ok=True)
    for directory in ("Program Files", "ProgramData", "Users/Default"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (system32 / "ntoskrnl.exe").write_bytes(pe_placeholder(spec.arch, subsystem=1))
    # libguestfs inspection reads cmd.exe's PE header for the architecture: no cmd.exe, or no header, and
    # virt-inspector (so virt-v2v) finds no operating system at all
    (system32 / "cmd.exe").write_bytes(pe_placeholder(spec.arch))
    (root / "Windows" / "explorer.exe").write_bytes(pe_placeholder(spec.arch, subsystem=2))
    _inbox_driver_package(system32 / "DriverStore" / "FileRepository", spec)
    hives = scratch / "hives"
    hives.mkdir(exist_ok=True)
    for name in ("SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"):
        empty_hive(hives / name, root_name=f"CMI-CreateHive{{{name}}}")
    _system_hive(hives / "SYSTEM", spec)
    _software_hive(hives / "SOFTWARE", spec)
    if spec.older_virtio:
        _install_older_virtio(root, hives, spec)
    for name in ("SYSTEM", "SOFTWARE", "SAM", "SECURITY", "DEFAULT"):
        shutil.copyfile(hives / name, system32 / "config" / name)


def _inbox_driver_package(store: Path, spec: WindowsRelease) -> None:
    """One of Windows' own driver packages, as Windows ships them: a UTF-16 INF with a byte order mark."""
    arch = "x86" if spec.arch == "X86" else "amd64"
    package = store / f"disk.inf_{arch}_a0b1c2d3e4f56789"
    package.mkdir(parents=True)
    inf = ("[Version]\r\nSignature=\"$Windows NT$\"\r\nClass=DiskDrive\r\nClassGUID={4d36e967-e325-11ce-bfc1-08002be10318}\r\n"
           f"Provider=%MSFT%\r\nDriverVer=06/21/2006,{spec.major}.{spec.minor}.{spec.build}.1\r\n\r\n"
           "[Strings]\r\nMSFT=\"Microsoft\"\r\n")
    (package / "disk.inf").write_bytes(b"\xff\xfe" + inf.encode("utf-16-le"))


def _system_hive(path: Path, spec: WindowsRelease) -> None:
    with Hive(path, write=True) as system:
        last_known_good = spec.last_known_good or spec.control_set
        system.set_many("Select", {k: (v, REG_DWORD) for k, v in
                                   {"Current": spec.control_set, "Default": spec.control_set, "LastKnownGood": last_known_good,
                                    "Failed": 0}.items()})
        for number in sorted({1, spec.control_set, last_known_good}):
            ccs = f"ControlSet{number:03d}"
            system.set(rf"{ccs}\Control\ComputerName\ComputerName", "ComputerName", "WIN-SYNTHETIC")
            system.set(rf"{ccs}\Services\Tcpip\Parameters", "Hostname", "WIN-SYNTHETIC")  # libguestfs reads this one
            system.set(rf"{ccs}\Control\Session Manager\Environment", "PROCESSOR_ARCHITECTURE", spec.arch)
            system.set(rf"{ccs}\Control\Session Manager\Environment", "OS", "Windows_NT")
            system.set_many(rf"{ccs}\Services\atapi", {
                "Type": (1, REG_DWORD), "Start": (0, REG_DWORD), "ErrorControl": (3, REG_DWORD),
                "ImagePath": (r"System32\drivers\atapi.sys", REG_EXPAND_SZ), "Group": ("SCSI miniport", REG_SZ),
            })
            if (spec.major, spec.minor) < (6, 2):
                system.ensure(rf"{ccs}\Control\CriticalDeviceDatabase\pci#cc_0101")
        if (spec.major, spec.minor) >= (6, 2):
            for key in ("DriverInfFiles", "DeviceIds", "DriverPackages"):
                system.ensure(rf"DriverDatabase\{key}")


def _software_hive(path: Path, spec: WindowsRelease) -> None:
    with Hive(path, write=True) as software:
        info = {
            "ProductName": (spec.product_name, REG_SZ),
            "EditionID": (spec.edition_id, REG_SZ),
            "InstallationType": (spec.installation_type, REG_SZ),
            "CurrentVersion": (spec.current_version, REG_SZ),
            "CurrentBuildNumber": (str(spec.build), REG_SZ),
            "CurrentBuild": (str(spec.build), REG_SZ),
            "SystemRoot": ("C:\\Windows", REG_SZ),
            "RegisteredOwner": (MARKER, REG_SZ),
        }
        if spec.major >= 10:
            info["CurrentMajorVersionNumber"] = (spec.major, REG_DWORD)
            info["CurrentMinorVersionNumber"] = (spec.minor, REG_DWORD)
        if spec.display_version:
            info["DisplayVersion"] = (spec.display_version, REG_SZ)
        if spec.csd_version:
            info["CSDVersion"] = (spec.csd_version, REG_SZ)
        if spec.ubr is not None:
            info["UBR"] = (spec.ubr, REG_DWORD)
        software.set_many(r"Microsoft\Windows NT\CurrentVersion", info)
        for package, state in spec.servicing:
            software.set(rf"{CBS_PACKAGES}\{package}", "CurrentState", state, REG_DWORD)
        software.set_many(rf"{UNINSTALL_KEYS['64-bit']}\{HEALTH_TOOLS_CODE}", {
            "DisplayName": ("Microsoft Update Health Tools", REG_SZ), "DisplayVersion": ("3.74.0.0", REG_SZ),
            "Publisher": ("Microsoft Corporation", REG_SZ), "WindowsInstaller": (1, REG_DWORD)})
        software.set(r"Microsoft\Windows\CurrentVersion", "DevicePath", r"%SystemRoot%\inf", REG_EXPAND_SZ)
        software.set(r"Microsoft\Windows\CurrentVersion", "ProgramFilesDir", r"C:\Program Files")


def _install_older_virtio(root: Path, hives: Path, spec: WindowsRelease) -> None:
    """What an earlier virtio-win install left behind: driver store packages, .sys files, services."""
    release = virtio_iso.RELEASES[spec.older_virtio]
    os_dir = os_directory(spec.major, spec.minor, spec.build, spec.server)
    ccs = f"ControlSet{spec.control_set:03d}"
    with Hive(hives / "SYSTEM", write=True) as system:
        for index, name in enumerate(("viostor", "NetKVM", "Balloon"), start=1):
            driver = DRIVERS[name]
            arch = "x86" if spec.arch == "X86" else "amd64"
            files = virtio_iso.driver_files(release, driver, os_dir, arch)
            package = root / "Windows/System32/DriverStore/FileRepository" / f"{driver.inf}.inf_{arch}_{index:016x}"
            package.mkdir(parents=True)
            for file_name, data in files.items():
                (package / file_name).write_bytes(data)
            (root / "Windows/INF" / f"oem{index}.inf").write_bytes(files[f"{driver.inf}.inf"])
            (root / "Windows/System32/drivers" / f"{driver.inf}.sys").write_bytes(files[f"{driver.inf}.sys"])
            system.set_many(rf"{ccs}\Services\{driver.service}", {
                "Type": (1, REG_DWORD), "Start": (0 if driver.boot else 3, REG_DWORD), "ErrorControl": (1, REG_DWORD),
                "ImagePath": (rf"System32\drivers\{driver.inf}.sys", REG_EXPAND_SZ),
                **({"Group": ("SCSI miniport", REG_SZ)} if driver.boot else {}),  # as the INF's LoadOrderGroup sets it
            })
            system.set(rf"DriverDatabase\DriverInfFiles\oem{index}.inf", "", [package.name], REG_MULTI_SZ)
            for hardware_id in driver.hardware_ids:
                system.set(rf"DriverDatabase\DeviceIds\{hardware_id}", f"oem{index}.inf", b"\x01\xff\x00\x00", REG_BINARY)
