"""What software a Windows image holds, read offline from its registry and driver store: the product and its
update level (build.UBR), the servicing packages installed (KB numbers), the driver packages in the driver
store, and the programs Windows lists under "Apps" (the Uninstall keys, MSI and others).

The inventory is what Windows itself would report (winver, Get-HotFix, pnputil /enum-drivers, the Apps
list), read from the same places, so a release's bill of materials is the image's, not the manifest's claim.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.common.digests import sha256_file
from pipeline.windows.drivers import STAGING_DIR
from pipeline.windows.inf import read_inf
from pipeline.windows.inspection import CURRENT_VERSION, WindowsFacts, WindowsVolume, open_hives, windows_facts
from pipeline.windows.registry import Hive

CBS_PACKAGES = r"Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages"
UNINSTALL_KEYS = {"64-bit": r"Microsoft\Windows\CurrentVersion\Uninstall",
                  "32-bit": r"WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall"}
DRIVER_STORE = r"Windows\System32\DriverStore\FileRepository"
# CBS CurrentState values (the servicing stack's package states) that mean "on this Windows".
INSTALLED_STATES = {0x70: "installed", 0x80: "permanent"}
KB = re.compile(r"KB(\d{6,8})", re.IGNORECASE)
ROLLUP = "Package_for_RollupFix"
MAX_TEXT = 256  # registry strings are the image's, not ours: a bound on what reaches a report


@dataclass(frozen=True)
class Update:
    kb: str | None  # "KB5031356"; None for a cumulative rollup named by its version only
    package: str  # the CBS package identity, e.g. Package_for_KB5031356~31bf3856ad364e35~amd64~~19041.3570.1.11
    version: str
    state: str  # installed | permanent


@dataclass(frozen=True)
class DriverPackage:
    inf: str  # the INF's name: viostor.inf
    folder: str  # its driver store folder (viostor.inf_amd64_0123456789abcdef), or its staging folder
    provider: str
    version: str | None
    date: str | None  # MM/DD/YYYY, as DriverVer writes it
    class_guid: str | None
    state: str = "installed"  # installed (in the driver store) | staged (pnputil adds it at first boot)


@dataclass(frozen=True)
class Program:
    name: str
    version: str | None
    publisher: str | None
    installer: str  # msi | other
    key: str  # the Uninstall subkey: a product code for an MSI
    bitness: str  # 64-bit | 32-bit (WOW6432Node)
    system_component: bool  # hidden from the Apps list (SystemComponent=1)


@dataclass(frozen=True)
class StagedInstaller:
    """An installer the image carries for its first boot (the guest agent's MSI): not installed yet."""

    path: str  # on the Windows volume
    sha256: str
    size: int


@dataclass(frozen=True)
class Software:
    windows: WindowsFacts
    ubr: int | None  # the update build revision: 19045.3803 is build 19045 at UBR 3803 (Windows 10 and later)
    updates: tuple[Update, ...]
    drivers: tuple[DriverPackage, ...]
    programs: tuple[Program, ...]
    staged_installers: tuple[StagedInstaller, ...] = ()

    @property
    def full_build(self) -> str:
        return f"{self.windows.major}.{self.windows.minor}.{self.windows.build}" + (f".{self.ubr}" if self.ubr is not None else "")

    def to_dict(self) -> dict:
        return {"windows": self.windows.to_dict(), "ubr": self.ubr, "full_build": self.full_build,
                "updates": [asdict(u) for u in self.updates], "drivers": [asdict(d) for d in self.drivers],
                "programs": [asdict(p) for p in self.programs], "staged_installers": [asdict(s) for s in self.staged_installers]}


def read_software(found: WindowsVolume) -> Software:
    """The inventory of a mounted Windows volume (inspection.windows_volume)."""
    with open_hives(found) as (system, software):
        windows = windows_facts(system, software, found.label)
        ubr = software.get(CURRENT_VERSION, "UBR")
        return Software(windows=windows, ubr=ubr if isinstance(ubr, int) else None, updates=_updates(software),
                        drivers=_driver_packages(found) + _staged_packages(found), programs=_programs(software),
                        staged_installers=_staged_installers(found))


def _updates(software: Hive) -> tuple[Update, ...]:
    found = []
    for package in software.subkeys(CBS_PACKAGES):
        state = INSTALLED_STATES.get(software.get(rf"{CBS_PACKAGES}\{package}", "CurrentState"))
        if state is None or not (KB.search(package) or package.startswith(ROLLUP)):
            continue  # staged, superseded or absent; or a feature package (language packs, FODs) rather than an update
        kb = KB.search(package)
        found.append(Update(kb=f"KB{kb.group(1)}" if kb else None, package=_text(package), version=_text(package.rsplit("~", 1)[-1]),
                            state=state))
    # one update is often several packages (its parts): one entry per KB, the highest version
    newest: dict[str, Update] = {}
    for update in sorted(found, key=lambda u: (_version_key(u.version), u.package)):
        newest[update.kb or update.package.split("~", 1)[0]] = update
    return tuple(sorted(newest.values(), key=lambda u: (u.kb or "", u.package)))


def _driver_packages(found: WindowsVolume) -> tuple[DriverPackage, ...]:
    store = found.path(DRIVER_STORE)
    if not store.is_dir():
        return ()
    packages = []
    for folder in sorted(store.iterdir(), key=lambda p: p.name.lower()):
        inf_name = folder.name.split("_", 1)[0]  # viostor.inf_amd64_<hash>
        inf = folder / inf_name
        if folder.is_symlink() or not folder.is_dir() or not inf_name.lower().endswith(".inf") or inf.is_symlink() or not inf.is_file():
            continue
        facts = read_inf(inf)
        packages.append(DriverPackage(inf=_text(inf_name), folder=_text(folder.name), provider=_text(facts.provider),
                                      version=_text(facts.version), date=_text(facts.date), class_guid=_text(facts.class_guid)))
    return tuple(packages)


def _staged_files(found: WindowsVolume, pattern: str) -> Iterator[Path]:
    """Regular files under the first-boot staging folder, none reached through a link the image planted."""
    staging = found.path(STAGING_DIR)
    if not staging.is_dir() or staging.is_symlink():
        return
    for path in sorted(staging.rglob(pattern), key=lambda p: str(p).lower()):
        if path.is_symlink() or not path.is_file() or any(p.is_symlink() for p in path.parents if staging in p.parents):
            continue
        yield path


def _staged_packages(found: WindowsVolume) -> tuple[DriverPackage, ...]:
    """Driver packages staged for first boot (the bakery's per-driver folders, or virt-v2v's flat one)."""
    packages = []
    for inf in _staged_files(found, "*.inf"):
        facts = read_inf(inf)
        folder = inf.parent.relative_to(found.root).as_posix().replace("/", "\\")
        packages.append(DriverPackage(inf=_text(inf.name.lower()), folder=_text(folder), provider=_text(facts.provider),
                                      version=_text(facts.version), date=_text(facts.date), class_guid=_text(facts.class_guid),
                                      state="staged"))
    return tuple(packages)


def _staged_installers(found: WindowsVolume) -> tuple[StagedInstaller, ...]:
    installers = []
    for msi in _staged_files(found, "*.msi"):
        installers.append(StagedInstaller(path=_text(msi.relative_to(found.root).as_posix().replace("/", "\\")),
                                          sha256=sha256_file(msi), size=msi.stat().st_size))
    return tuple(installers)


def _programs(software: Hive) -> tuple[Program, ...]:
    programs = []
    for bitness, root in UNINSTALL_KEYS.items():
        for key in software.subkeys(root):
            values = software.values(rf"{root}\{key}")
            name = values.get("DisplayName")
            if not isinstance(name, str) or not name.strip():
                continue  # Windows lists no entry without a display name
            version = values.get("DisplayVersion")
            publisher = values.get("Publisher")
            programs.append(Program(
                name=_text(name), version=_text(version) if isinstance(version, str) and version else None,
                publisher=_text(publisher) if isinstance(publisher, str) and publisher else None,
                installer="msi" if values.get("WindowsInstaller") == 1 else "other", key=_text(key), bitness=bitness,
                system_component=values.get("SystemComponent") == 1))
    return tuple(sorted(programs, key=lambda p: (p.name.lower(), p.bitness, p.key)))


def _text(value: str | None) -> str | None:
    """A registry or INF string as a report may hold it: printable, bounded."""
    if value is None:
        return None
    cleaned = "".join(c if c.isprintable() else "?" for c in str(value)).strip()
    return cleaned[:MAX_TEXT]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())

