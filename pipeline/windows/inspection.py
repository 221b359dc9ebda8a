"""What a Windows disk image IS, read offline: product, version, build, arch, firmware layout, and the state
of every virtio driver. Facts, not the manifest's claims: the bake picks drivers from them and the
linter checks the property set against them.
"""

from __future__ import annotations

import contextlib
import re
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.run import require_tool, run
from pipeline.diskimage import fuse
from pipeline.diskimage.info import check_qcow2, image_info
from pipeline.diskimage.safety import CheckedImage, check_image
from pipeline.windows import startup_scripts, volume
from pipeline.windows.drivers import DRIVERS, STAGING_DIR, driver_version, os_directory, version_key
from pipeline.windows.registry import Hive, HiveState, boot_control_set, hive_state, selected_control_sets

CURRENT_VERSION = r"Microsoft\Windows NT\CurrentVersion"
GUEST_AGENT_SERVICE = "QEMU-GA"
FIRSTBOOT_SCRIPT = STAGING_DIR + r"\install-virtio-drivers.cmd"
# Where other tools leave their first-boot machinery: virt-v2v's (libguestfs firstboot) runs its scripts
# from a service (rhsrvany, or pnp_wait in newer releases) under this folder.
OTHER_FIRSTBOOT = (r"Program Files\Guestfs\Firstboot", r"Program Files\Red Hat\Firstboot")
FIRSTBOOT_SERVICES = ("rhsrvany", "RHSrvAny", "pnp_wait")
# virt-v2v's first boot: a service named "firstboot" (Start=2, auto) that rhsrvany or pvvxsvc runs
# (convert/windows.ml: "Virt tools firstboot service"); cloudbase-init: its own service, installed by its MSI.
V2V_FIRSTBOOT_SERVICE = "firstboot"
CLOUDBASE_INIT_SERVICE = "cloudbase-init"
ARCHITECTURES = {"AMD64": "x86_64", "X86": "i686", "ARM64": "aarch64"}  # registry -> Glance/Nova architecture


@dataclass(frozen=True)
class WindowsFacts:
    product_name: str  # corrected for Windows 11, whose registry still says "Windows 10"
    registry_product_name: str
    edition_id: str
    installation_type: str  # Client | Server
    major: int
    minor: int
    build: int
    display_version: str
    arch: str  # AMD64 | X86 | ARM64
    control_set: str  # ControlSet00N Windows boots: Select\Default
    hostname: str
    control_sets: tuple[str, ...] = ()  # every set Select names for booting (Default, Current, LastKnownGood)

    @property
    def architecture(self) -> str | None:
        """The `architecture` property value (x86_64, i686, aarch64) that describes this Windows."""
        return ARCHITECTURES.get(self.arch)

    @property
    def server(self) -> bool:
        return self.installation_type.lower().startswith("server")

    @property
    def virtio_os_dir(self) -> str:
        try:
            return os_directory(self.major, self.minor, self.build, self.server)
        except ValueError as exc:
            raise BakeryError(f"{self.product_name}: {exc}") from None

    @property
    def os_version(self) -> str:
        """The os_version property value that describes this Windows ("10", "11", "2019", "2008R2"...)."""
        names = {"w7": "7", "2k8R2": "2008R2", "w8": "8", "2k12": "2012", "w8.1": "8.1", "2k12R2": "2012R2",
                 "w10": "10", "2k16": "2016", "2k19": "2019", "2k22": "2022", "w11": "11", "2k25": "2025"}
        return names[self.virtio_os_dir]

    @property
    def pre_windows8(self) -> bool:
        """Boot drivers are registered in the CriticalDeviceDatabase before Windows 8, in DriverDatabase after."""
        return (self.major, self.minor) < (6, 2)

    def to_dict(self) -> dict:
        try:
            directory, version = self.virtio_os_dir, self.os_version
        except BakeryError:  # a Windows virtio-win never supported: facts are still facts
            directory = version = None
        return {**asdict(self), "control_sets": list(self.control_sets), "server": self.server, "os_version": version,
                "virtio_os_dir": directory, "architecture": self.architecture}


@dataclass(frozen=True)
class DriverState:
    name: str
    service_start: int | None  # the service's Start value (0 = boot) in the current control set
    sys_file: bool  # System32\drivers\<name>.sys present
    boot_registered: bool  # CriticalDeviceDatabase (pre-8) or DriverDatabase entries for its PCI ids
    staged_version: str | None  # in the staging folder (installed at first boot)
    installed_versions: tuple[str, ...]  # in the driver store
    service_present: bool = False  # its service exists in the control set Windows boots
    missing_in_control_sets: tuple[str, ...] = ()  # boot drivers: the sets Select names without a boot-start service
    database_registered: bool = False  # a DriverDatabase package of its INF (Windows 8+)
    service_type: int | None = None  # 1: a kernel-mode driver
    service_group: str | None = None  # boot storage drivers load in "SCSI miniport"
    image_file: str | None = None  # why the service's ImagePath does not load ("" when it is a PE of the image's architecture)

    @property
    def bootable(self) -> bool:
        """What Windows needs to open its boot disk behind this controller: in the control set that boots, a
        boot-start kernel driver service in its load-order group whose ImagePath is a PE image of the image's
        architecture, and the controller's PCI ids mapped to it. A .sys file alone is not a driver."""
        return (self.service_start == 0 and self.service_type == 1 and (self.service_group or "").lower() == BOOT_GROUP
                and self.image_file == "" and self.boot_registered and not self.missing_in_control_sets)

    @property
    def present(self) -> bool:
        return (self.bootable or self.staged_version is not None or bool(self.installed_versions) or self.service_present
                or self.database_registered)

    @property
    def newest(self) -> str | None:
        versions = [v for v in (self.staged_version, *self.installed_versions) if v]
        return max(versions, key=version_key) if versions else None

    def to_dict(self) -> dict:
        return {**asdict(self), "missing_in_control_sets": list(self.missing_in_control_sets), "bootable": self.bootable,
                "present": self.present, "newest": self.newest}


@dataclass(frozen=True)
class ImageFacts:
    image: str
    format: str
    virtual_size: int
    layout: volume.Layout
    windows_partition: int
    windows: WindowsFacts
    drivers: dict[str, DriverState] = field(default_factory=dict)
    guest_agent: dict[str, bool] = field(default_factory=dict)
    device_path: str = ""
    firstboot: bool = False
    firstboot_by: str | None = None  # bakery | virt-v2v
    firstboot_hooks: tuple[str, ...] = ()  # how it starts: startup-script, service, setupcomplete, runonce
    firstboot_mechanisms: tuple[str, ...] = ()  # every one found: bakery, virt-v2v, cloudbase-init
    hives: dict = field(default_factory=dict)  # SYSTEM / SOFTWARE: clean or not (registry.HiveState)

    @property
    def firmware(self) -> str:
        return self.layout.firmware

    def to_dict(self) -> dict:
        return {
            "image": self.image, "format": self.format, "virtual_size": self.virtual_size,
            "layout": self.layout.to_dict(), "firmware": self.firmware, "windows_partition": self.windows_partition,
            "windows": self.windows.to_dict(), "drivers": {k: v.to_dict() for k, v in self.drivers.items()},
            "guest_agent": self.guest_agent, "device_path": self.device_path, "firstboot": self.firstboot,
            "firstboot_by": self.firstboot_by, "firstboot_hooks": list(self.firstboot_hooks),
            "firstboot_at_boot": self.firstboot_at_boot, "firstboot_mechanisms": list(self.firstboot_mechanisms), "hives": self.hives,
        }

    @property
    def firstboot_at_boot(self) -> bool:
        """The first-boot step runs at boot without anyone logging on (not only after sysprep or at a logon)."""
        return bool({"startup-script", "service"} & set(self.firstboot_hooks))

    def identity(self) -> dict:
        """What the image is, without what a bake will change (drivers, agent, first boot): what plan and lint
        know of a source before it is baked."""
        return {"image": self.image, "format": self.format, "virtual_size": self.virtual_size, "layout": self.layout.to_dict(),
                "firmware": self.firmware, "windows_partition": self.windows_partition, "windows": self.windows.to_dict(),
                "hives": self.hives, "identity_only": True}

    def identity_lint_facts(self) -> dict:
        return {"virtual_size": self.virtual_size, "firmware": self.firmware, "windows": self.windows.to_dict()}

    def lint_facts(self) -> dict:
        """The subset the property linter reasons about."""
        return {
            "virtual_size": self.virtual_size,
            "firmware": self.firmware,
            "windows": self.windows.to_dict(),
            "drivers": {k: {"bootable": v.bootable, "present": v.present} for k, v in self.drivers.items()},
            "guest_agent": any(self.guest_agent.values()),
        }


def refuse_unclean_hives(label: str, hives: dict[str, dict]) -> None:
    """A hive Windows did not close cleanly has changes only in its transaction logs. Replaying them is not
    left to a library that gets it wrong (regipy applies log entries whatever their sequence number, stale
    ones included): the image is refused, with how to get a clean one. `hives`: HiveState.to_dict() by name."""
    for name, state in hives.items():
        if not state["clean"]:
            logs = state["pending_logs"]
            held = f"; {', '.join(logs)} hold changes the hive does not have" if logs else ""
            raise BakeryError(
                f"{label}: the {name} hive was not closed cleanly (sequence numbers {state['primary_sequence']} and "
                f"{state['secondary_sequence']}{held}): refused, editing it would lose those changes",
                hint="boot the image, shut Windows down cleanly (not hibernated, fast startup off: shutdown /s /t 0) "
                     "and export the disk again")


@dataclass(frozen=True)
class WindowsVolume:
    root: Path  # the mounted Windows volume (case-insensitive)
    layout: volume.Layout
    partition: volume.Partition
    label: str = ""  # how the user knows the image, for errors

    def path(self, relative: str) -> Path:
        """A path on the volume that passes through no symbolic link (see volume.confined)."""
        return volume.confined(self.root, relative, label=self.label)

    @property
    def system_hive(self) -> Path:
        return self.path("Windows/System32/config/SYSTEM")

    @property
    def software_hive(self) -> Path:
        return self.path("Windows/System32/config/SOFTWARE")


@contextlib.contextmanager
def windows_volume(image: Path, fmt: str, workdir: Path, *, writable: bool, clock: int | None = None,
                   label: str | None = None) -> Iterator[WindowsVolume]:
    """Find the NTFS partition that holds Windows and mount it (read-only unless writable; with `clock`,
    every time the file system stamps is that Unix time). `label` names the image in errors."""
    label = label or str(image)
    size = image_info(image, fmt=fmt).virtual_size
    layout = _layout(image, fmt, workdir, size=size, label=label)
    with contextlib.ExitStack() as stack:
        searched = []
        for partition in layout.partitions:
            window = workdir / f"part{partition.number}"
            with fuse.exposed(image, fmt, mountpoint=window, window=partition):
                if not volume.is_ntfs(window):
                    continue
                searched.append(partition.number)
                with volume.ntfs_mounted(window, workdir / "probe", writable=False, label_for_errors=label) as root:
                    found = volume.confined(root, volume.SYSTEM_HIVE, label=label).is_file()
            if found:
                window_ctx = fuse.exposed(image, fmt, mountpoint=window, window=partition, writable=writable)
                stack.enter_context(window_ctx)
                root = stack.enter_context(volume.ntfs_mounted(window, workdir / "windows", writable=writable,
                                                               label_for_errors=label, clock=clock))
                yield WindowsVolume(root, layout, partition, label)
                return
        if not searched:
            raise BakeryError(f"{label}: no NTFS partition among {len(layout.partitions)}: not a Windows disk")
        raise BakeryError(
            f"{label}: no Windows installation (Windows\\System32\\config\\SYSTEM) on NTFS partition(s) {', '.join(map(str, searched))}"
        )


def wipe_unused_space(image: Path, fmt: str, partition, workdir: Path, *, label: str) -> None:
    """Zero what the NTFS volume no longer uses: free clusters (deleted files' data), unused MFT records
    (deleted files' names and small contents), directory index slack (deleted names) and file tails, so that
    neither ntfsundelete nor a scan of the raw image finds what was deleted. Clusters already zero are only
    read (ntfswipe --unused-fast); the zeros then cost nothing in a sparse raw or a qcow2."""
    require_tool("ntfswipe", "ntfs-3g")
    with fuse.exposed(image, fmt, mountpoint=workdir / f"part{partition.number}", window=partition, writable=True) as window:
        proc = run(["ntfswipe", "--unused-fast", "--tails", "--mft", "--directory", "--bytes", "0", "--quiet", window],
                   check=False, timeout=6 * 3600)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).decode(errors="replace").strip().splitlines()
        raise BakeryError(f"{label}: wiping the Windows volume's unused space failed: {output[-1] if output else proc.returncode}")


def _layout(image: Path, fmt: str, workdir: Path, *, size: int, label: str) -> volume.Layout:
    """The partition table; a qcow2 is exposed only while it is read, so a partition can then be exposed writable
    (qemu-storage-daemon locks the image for each export)."""
    if fmt == "raw":
        return volume.read_layout(image, image_size=size, label_for_errors=label)
    with fuse.exposed(image, fmt, mountpoint=workdir / "disk") as disk:
        return volume.read_layout(disk, image_size=size, label_for_errors=label)


def inspect_image(image: Path, *, workdir: Path | None = None, label: str | None = None,
                  checked: CheckedImage | None = None) -> ImageFacts:
    """The facts of a disk image file, after the gate (diskimage.safety) has accepted it: `checked` when the
    caller has just gated it (with its own limits), else here."""
    label = label or str(image)
    checked = checked or check_image(image, label=label)
    if checked.format == "qcow2":
        check_qcow2(image)
    if workdir:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bakery-inspect-", dir=workdir) as scratch:
        with windows_volume(image, checked.format, Path(scratch), writable=False, label=label) as found:
            return read_facts(found, image=str(image), fmt=checked.format, virtual_size=checked.virtual_size)


def read_windows(found: WindowsVolume) -> WindowsFacts:
    """Just what Windows it is (the bake needs this before it changes anything)."""
    with open_hives(found) as (system, software):
        return windows_facts(system, software, found.label)


@contextlib.contextmanager
def open_hives(found: WindowsVolume) -> Iterator[tuple[Hive, Hive]]:
    for hive in (found.system_hive, found.software_hive):
        if not hive.is_file():
            raise BakeryError(f"{found.label}: the Windows volume has no {hive.relative_to(found.root)} hive")
    with Hive(found.system_hive) as system, Hive(found.software_hive) as software:
        yield system, software


def read_facts(found: WindowsVolume, *, image: str, fmt: str, virtual_size: int) -> ImageFacts:
    """Facts from what Windows will use (services, the driver store, DriverDatabase, System32\\drivers), so
    an image refreshed by another tool (virt-v2v's flat Drivers\\VirtIO folder and first-boot service) reads
    as what it is, not as "nothing installed"."""
    states = hive_states(found)
    with open_hives(found) as (system, software):
        windows = windows_facts(system, software, found.label)
        drivers = {name: _driver_state(found, system, windows, name) for name in DRIVERS}
        agent = {
            "service": system.has(rf"{windows.control_set}\Services\{GUEST_AGENT_SERVICE}"),
            "staged": found.path(STAGING_DIR + r"\guest-agent").is_dir() or any(
                _files(found, folder, "**/qemu-ga*.msi") for folder in (STAGING_DIR, *OTHER_FIRSTBOOT))
            or bool(_files(found, ".", "qemu-ga*.msi")),  # virt-v2v copies the agent's MSI to the drive's root
            "installed": found.path(r"Program Files\Qemu-ga\qemu-ga.exe").is_file(),
        }
        device_path = software.get(r"Microsoft\Windows\CurrentVersion", "DevicePath", "")
        hooks = _firstboot_hooks(found, system, software, windows)
        mechanisms = _firstboot_mechanisms(found, system, windows, hooks)
        firstboot_by = mechanisms[0] if mechanisms else None
        hooks = hooks if firstboot_by else ()
    return ImageFacts(
        image=image, format=fmt, virtual_size=virtual_size, layout=found.layout, windows_partition=found.partition.number,
        windows=windows, drivers=drivers, guest_agent=agent, device_path=device_path,
        firstboot=firstboot_by is not None, firstboot_by=firstboot_by, firstboot_hooks=hooks, firstboot_mechanisms=mechanisms,
        hives={k: v.to_dict() for k, v in states.items()},
    )


def hive_states(found: WindowsVolume) -> dict[str, HiveState]:
    return {name: hive_state(path) for name, path in (("SYSTEM", found.system_hive), ("SOFTWARE", found.software_hive))
            if path.is_file()}


def _firstboot_mechanisms(found: WindowsVolume, system: Hive, windows: WindowsFacts, hooks: tuple[str, ...]) -> tuple[str, ...]:
    """Every first-boot mechanism the image carries, the bakery's first: the bakery's script, virt-v2v's
    firstboot service (or its older rhsrvany/pnp_wait ones and Firstboot folder), cloudbase-init's service."""
    found_ones = []
    if found.path(FIRSTBOOT_SCRIPT).is_file():
        found_ones.append("bakery")
    if "service" in hooks or any(found.path(folder).is_dir() for folder in OTHER_FIRSTBOOT):
        found_ones.append("virt-v2v")
    if system.has(rf"{windows.control_set}\Services\{CLOUDBASE_INIT_SERVICE}"):
        found_ones.append("cloudbase-init")
    return tuple(found_ones)


def _firstboot_hooks(found: WindowsVolume, system: Hive, software: Hive, windows: WindowsFacts) -> tuple[str, ...]:
    script = FIRSTBOOT_SCRIPT.rsplit("\\", 1)[1].lower()
    hooks = []
    if any(script in s.lower() for s in startup_scripts.registered(found.path, software)):
        hooks.append("startup-script")
    if any(system.has(rf"{windows.control_set}\Services\{s}") for s in FIRSTBOOT_SERVICES) or _v2v_service(system, windows):
        hooks.append("service")
    setup_complete = found.path(r"Windows\Setup\Scripts\SetupComplete.cmd")
    if setup_complete.is_file() and script in setup_complete.read_bytes().decode("latin-1").lower():
        hooks.append("setupcomplete")
    if any(script in str(v).lower() for v in software.values(r"Microsoft\Windows\CurrentVersion\RunOnce").values()):
        hooks.append("runonce")
    return tuple(hooks)


def _v2v_service(system: Hive, windows: WindowsFacts) -> bool:
    """virt-v2v's firstboot service: started automatically, by a service wrapper (rhsrvany or pvvxsvc)."""
    key = rf"{windows.control_set}\Services\{V2V_FIRSTBOOT_SERVICE}"
    image_path = str(system.get(key, "ImagePath", "")).lower()
    return system.get(key, "Start") == 2 and ("srvany" in image_path or "pvvxsvc" in image_path
                                               or system.get(key, "DisplayName") == "Virt tools firstboot service")


def _files(found: WindowsVolume, folder: str, pattern: str) -> list[Path]:
    directory = found.path(folder)
    return sorted(p for p in directory.glob(pattern) if not p.is_symlink()) if directory.is_dir() else []


def windows_facts(system: Hive, software: Hive, image: str) -> WindowsFacts:
    info = software.values(CURRENT_VERSION)
    if not info.get("ProductName") or not info.get("CurrentBuildNumber"):
        raise BakeryError(f"{image}: SOFTWARE has no {CURRENT_VERSION} with ProductName and CurrentBuildNumber: not a Windows installation")
    control_set = boot_control_set(system)
    build = int(str(info.get("CurrentBuildNumber") or info.get("CurrentBuild")))
    if "CurrentMajorVersionNumber" in info:
        major, minor = int(info["CurrentMajorVersionNumber"]), int(info.get("CurrentMinorVersionNumber", 0))
    else:
        major, minor = (int(p) for p in str(info.get("CurrentVersion", "0.0")).split(".")[:2])
    product = info["ProductName"]
    installation_type = info.get("InstallationType") or ("Server" if "Server" in product else "Client")
    if major == 10 and build >= 22000 and not installation_type.startswith("Server"):
        product = product.replace("Windows 10", "Windows 11")
    environment = system.values(rf"{control_set}\Control\Session Manager\Environment")
    return WindowsFacts(
        product_name=product, registry_product_name=info["ProductName"], edition_id=info.get("EditionID", ""),
        installation_type=installation_type, major=major, minor=minor, build=build,
        display_version=info.get("DisplayVersion", info.get("CSDVersion", "")),
        arch=str(environment.get("PROCESSOR_ARCHITECTURE", "")).upper(), control_set=control_set,
        hostname=system.get(rf"{control_set}\Control\ComputerName\ComputerName", "ComputerName", ""),
        control_sets=selected_control_sets(system),
    )


def _driver_state(found: WindowsVolume, system: Hive, windows: WindowsFacts, name: str) -> DriverState:
    driver = DRIVERS[name]
    sets = windows.control_sets or (windows.control_set,)
    service = system.values(rf"{windows.control_set}\Services\{driver.service}")
    without_service = tuple(s for s in sets if system.get(rf"{s}\Services\{driver.service}", "Start") != 0)
    registered = False
    if driver.hardware_ids:
        if windows.pre_windows8:  # in every control set that may boot, or a LastKnownGood fallback cannot find its disk
            registered = all(system.get(rf"{s}\Control\CriticalDeviceDatabase\{_cdd_key(hwid)}", "Service") == driver.service
                             for s in sets for hwid in driver.hardware_ids)
        else:
            registered = all(system.subkeys(rf"DriverDatabase\DeviceIds\{hwid}") or system.values(rf"DriverDatabase\DeviceIds\{hwid}")
                             for hwid in driver.hardware_ids)
    staged = _inf_version(found.path(rf"{STAGING_DIR}\{name}\{driver.inf}.inf")) or _inf_version(
        found.path(rf"{STAGING_DIR}\{driver.inf}.inf"))  # virt-v2v stages every package flat in one folder
    store = found.path(r"Windows\System32\DriverStore\FileRepository")
    installed = sorted(
        {v for package in (store.glob(f"{driver.inf}.inf_*") if store.is_dir() else [])
         if not package.is_symlink() and (v := _inf_version(package / f"{driver.inf}.inf"))},
        key=version_key,
    )
    return DriverState(
        name=name, service_start=service.get("Start"), sys_file=found.path(rf"Windows\System32\drivers\{driver.inf}.sys").is_file(),
        service_type=service.get("Type"), service_group=service.get("Group"),
        image_file=_image_file_problem(found, service.get("ImagePath") or rf"System32\drivers\{driver.inf}.sys", windows.arch)
        if service else None,
        boot_registered=registered, staged_version=staged, installed_versions=tuple(installed),
        service_present=bool(service) and driver.service != "", missing_in_control_sets=without_service if driver.boot else (),
        database_registered=_in_driver_database(system, driver.inf),
    )


BOOT_GROUP = "scsi miniport"
PE_MACHINES = {0x014C: "X86", 0x8664: "AMD64", 0xAA64: "ARM64"}


def _image_file_problem(found: WindowsVolume, image_path: str, arch: str | None) -> str:
    """Why a service's ImagePath would not load as a driver of this Windows ('' when it would): missing, not a
    PE image (MZ, then PE\\0\\0 where e_lfanew points), or built for another architecture."""
    relative = re.sub(r"^(\\SystemRoot\\|%SystemRoot%\\|\\\?\?\\C:\\Windows\\|C:\\Windows\\)", "", image_path.strip(), flags=re.IGNORECASE)
    try:
        path = found.path(rf"Windows\{relative}")
    except BakeryError as exc:
        return exc.one_line()
    if path.is_symlink() or not path.is_file():
        return f"{image_path}: no such file"
    with open(path, "rb") as handle:
        head = handle.read(4096)
    if head[:2] != b"MZ" or len(head) < 0x40:
        return f"{image_path}: not a PE image (no MZ header)"
    offset = struct.unpack_from("<I", head, 0x3C)[0]
    if offset + 6 > len(head) or head[offset:offset + 4] != b"PE\0\0":
        return f"{image_path}: not a PE image (no PE header)"
    machine = PE_MACHINES.get(struct.unpack_from("<H", head, offset + 4)[0], "unknown")
    if arch and machine != arch:
        return f"{image_path}: a {machine} image on {arch} Windows"
    return ""


def _in_driver_database(system: Hive, inf: str) -> bool:
    """A package of this INF known to PnP (Windows 8 and later), whoever put it there."""
    return any(name.lower().startswith(f"{inf}.inf_") for name in system.subkeys(r"DriverDatabase\DriverPackages"))


def _cdd_key(hardware_id: str) -> str:
    return hardware_id.lower().replace("\\", "#")


def _inf_version(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file():  # a link in the driver store is never read
        return None
    found = driver_version(path.read_text(encoding="utf-8", errors="replace"))
    return found[1] if found else None
