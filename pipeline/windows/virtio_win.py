"""The virtio-win driver source: an ISO (read with pycdlib, never mounted) or an unpacked directory.

It knows its version, which OS directories each driver has, and hands out the driver packages that fit
a Windows as the image's registry describes it, never as the manifest claims it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.windows.drivers import ARCHES, DRIVERS, OS_DIRECTORIES, OS_FALLBACKS, driver_version

LABEL_VERSION = re.compile(r"virtio-win-(\d+(?:\.\d+)+)", re.IGNORECASE)


@dataclass(frozen=True)
class SelectedDriver:
    name: str
    os_dir: str  # the directory used (may be a fallback, see OS_FALLBACKS)
    arch: str
    files: tuple[str, ...]  # source paths
    version: str | None  # from the INF's DriverVer

    def to_dict(self) -> dict:
        return {"name": self.name, "os_dir": self.os_dir, "arch": self.arch, "version": self.version, "files": len(self.files)}


class VirtioWin:
    """An index of `<driver>/<os>/<arch>/<file>` over an ISO's Joliet tree or a directory."""

    def __init__(self, location: Path):
        self.location = location
        self._iso = None
        if location.is_dir():
            self.label = location.name
            paths = [str(p.relative_to(location)) for p in location.rglob("*") if p.is_file()]
        elif location.is_file():
            self._iso, self.label, paths = _open_iso(location)
        else:
            raise BakeryError(f"{location}: no such virtio-win ISO or directory")
        self.index: dict[str, dict[str, dict[str, list[str]]]] = {}
        for path in paths:
            parts = path.strip("/").split("/")
            if len(parts) == 4 and parts[0] in DRIVERS and parts[1] in OS_DIRECTORIES:
                self.index.setdefault(parts[0], {}).setdefault(parts[1], {}).setdefault(parts[2], []).append(path)
        if not self.index:
            raise BakeryError(f"{location}: no <driver>/<os>/<arch>/ driver packages found: not a virtio-win ISO or tree")
        self.version = self._version()

    def close(self) -> None:
        if self._iso is not None:
            self._iso.close()
            self._iso = None

    def __enter__(self) -> "VirtioWin":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def os_dirs(self) -> list[str]:
        found = {os_dir for by_os in self.index.values() for os_dir in by_os}
        return [d for d in OS_DIRECTORIES if d in found]

    def select(self, names: tuple[str, ...], *, os_dir: str, arch: str, product: str) -> list[SelectedDriver]:
        """The packages for one Windows; the boot drivers must exist, optional ones are skipped if absent."""
        arch_dir = ARCHES.get(arch.upper())
        if arch_dir is None:
            raise BakeryError(f"{product}: architecture {arch or 'unknown'} has no virtio-win drivers")
        candidates = (os_dir, *OS_FALLBACKS.get(os_dir, ()))
        if not any(d in self.os_dirs for d in candidates):
            raise BakeryError(
                f"{self.location}: virtio-win {self.version} has no drivers for {product} (OS directory {os_dir}); "
                f"it has {', '.join(self.os_dirs)}; pin an older virtio-win release that still ships {os_dir}"
            )
        selected = []
        for name in names:
            if name not in DRIVERS:
                raise BakeryError(f"unknown virtio driver {name!r}; expected one of {', '.join(DRIVERS)}")
            by_os = self.index.get(name, {})
            chosen = next((d for d in candidates if arch_dir in by_os.get(d, {})), None)
            if chosen is None:
                if DRIVERS[name].boot:
                    raise BakeryError(f"{self.location}: virtio-win {self.version} has no {name} for {os_dir}/{arch_dir}")
                continue
            files = tuple(sorted(by_os[chosen][arch_dir]))
            selected.append(SelectedDriver(name, chosen, arch_dir, files, self._version_of(name, files)))
        return selected

    def extract(self, selection: list[SelectedDriver], destination: Path) -> None:
        """Copy each selected package into destination/<driver>/."""
        for driver in selection:
            target = destination / driver.name
            target.mkdir(parents=True, exist_ok=True)
            for path in driver.files:
                self._copy(path, target / Path(path).name)

    def has_file(self, path: str) -> bool:
        if self._iso is None:
            return (self.location / path).is_file()
        try:
            self._iso.get_record(joliet_path="/" + path.lstrip("/"))
        except Exception:  # pycdlib raises its own exception for a missing path
            return False
        return True

    def extract_file(self, path: str, destination: Path) -> bool:
        if not self.has_file(path):
            return False
        self._copy(path, destination)
        return True

    def _copy(self, path: str, target: Path) -> None:
        if self._iso is None:
            shutil.copyfile(self.location / path, target)
        else:
            self._iso.get_file_from_iso(str(target), joliet_path="/" + path.lstrip("/"))

    def _read(self, path: str) -> bytes:
        if self._iso is None:
            return (self.location / path).read_bytes()
        import io

        buffer = io.BytesIO()
        self._iso.get_file_from_iso_fp(buffer, joliet_path="/" + path.lstrip("/"))
        return buffer.getvalue()

    def release_epoch(self) -> int:
        """Midnight UTC of the newest DriverVer date in this virtio-win: the bake's build epoch by default.

        It is a property of the pinned input, so an unchanged virtio-win stamps the same time every month
        and the stage cache can serve the next release; a new virtio-win moves it forward."""
        newest = None
        for name, by_os in self.index.items():
            for by_arch in by_os.values():
                for files in by_arch.values():
                    for path in files:
                        if path.lower().endswith(f"/{DRIVERS[name].inf}.inf"):
                            found = driver_version(self._read(path).decode(errors="replace"))
                            if found:
                                month, day, year = (int(p) for p in found[0].split("/"))
                                newest = max(newest or dt.date.min, dt.date(year, month, day))
        if newest is None:
            raise BakeryError(f"{self.location}: no DriverVer date in any INF; set bake.epoch in the manifest")
        return int(dt.datetime(newest.year, newest.month, newest.day, tzinfo=dt.timezone.utc).timestamp())

    def _version_of(self, name: str, files: tuple[str, ...]) -> str | None:
        inf = next((f for f in files if f.lower().endswith(f"/{DRIVERS[name].inf}.inf")), None)
        found = driver_version(self._read(inf).decode(errors="replace")) if inf else None
        return found[1] if found else None

    def _version(self) -> str:
        """virtio-win's own release number: from the volume label or directory name, else viostor's DriverVer."""
        match = LABEL_VERSION.search(self.label or "")
        if match:
            return match.group(1)
        for by_os in self.index.get("viostor", {}).values():
            for files in by_os.values():
                version = self._version_of("viostor", tuple(files))
                if version:
                    return f"driver {version}"
        return "unknown"


def _open_iso(path: Path):
    import pycdlib
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
    except (PyCdlibException, OSError, ValueError, IndexError, KeyError, struct.error, RecursionError) as exc:
        raise BakeryError(f"{path}: not a readable ISO 9660 image ({type(exc).__name__}: {exc})") from None
    if not iso.has_joliet():
        iso.close()
        raise BakeryError(f"{path}: the ISO has no Joliet tree: the virtio-win ISO always has one")
    label = iso.pvd.volume_identifier.decode(errors="replace").strip()
    paths = []
    for root, _dirs, files in iso.walk(joliet_path="/"):
        paths += [f"{root.rstrip('/')}/{name}".lstrip("/") for name in files]
    return iso, label, paths
