"""The offline virtio refresh. Source image in, raw image with the pinned virtio drivers out.

1. convert the source (raw or qcow2) into a sparse raw work file: the source itself is only read;
2. mount the Windows volume of the work file, read what Windows it is from its registry;
3. select that Windows' drivers from the pinned virtio-win, copy the SYSTEM/SOFTWARE hives out;
4. run the elements' phases (diskimage-builder format) against the mounted volume and the hive copies;
5. write the hives back, read the facts again from the result, unmount (flushing everything);
6. rename the work file to its final name, and only then is it an image a later stage may publish.
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.build.bake import elements
from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.run import require_tool, run
from pipeline.diskimage.info import GiB, image_info
from pipeline.diskimage.safety import DEFAULT_MAX_VIRTUAL_GIB, check_image, qemu_img_input
from pipeline.manifest import BakeSpec
from pipeline.windows.drivers import BOOT_DRIVERS, STAGING_DIR
from pipeline.windows.inspection import (
    ImageFacts,
    WindowsVolume,
    hive_states,
    read_facts,
    read_windows,
    refuse_unclean_hives,
    windows_volume,
)
from pipeline.windows.registry import Hive, pin_timestamps, timestamps
from pipeline.windows.virtio_win import SelectedDriver, VirtioWin

HIVES = ("SYSTEM", "SOFTWARE")
GUEST_AGENT_FILES = ("guest-agent/qemu-ga-x86_64.msi", "guest-agent/qemu-ga-i386.msi")


@dataclass(frozen=True)
class BakeResult:
    raw: Path
    qcow2: Path | None
    facts: ImageFacts
    virtio_win_version: str
    drivers: tuple[SelectedDriver, ...]
    elements: tuple[str, ...]
    build_epoch: int = 0  # the one time the bake wrote

    def to_dict(self) -> dict:
        return {
            "build_epoch": dt.datetime.fromtimestamp(self.build_epoch, dt.timezone.utc).isoformat(),
            "raw": str(self.raw), "qcow2": str(self.qcow2) if self.qcow2 else None,
            "virtio_win_version": self.virtio_win_version, "drivers": [d.to_dict() for d in self.drivers],
            "elements": list(self.elements),
        }


def resolve_elements(spec: BakeSpec) -> list[elements.Element]:
    return elements.resolve((*elements.DEFAULT_ELEMENTS, *spec.elements), elements.search_path(spec.elements_path))


def bake(spec: BakeSpec, source: Path, virtio_win: Path, workdir: Path, *, build_epoch: int | None = None,
         label: str | None = None, max_virtual_size: int = DEFAULT_MAX_VIRTUAL_GIB * GiB) -> BakeResult:
    """Bake into workdir/image.raw. On any failure workdir is removed: nothing half-done survives.

    Every time the bake writes is build_epoch: by default bake.epoch from the manifest, else the virtio-win
    release's newest DriverVer date, so the same inputs give the same bytes whenever they are baked.
    `label` is how the user knows the source (its manifest field); errors name it, never the work file."""
    for tool, package in (("qemu-img", "qemu-utils"), ("qemu-storage-daemon", "qemu-system-common"), ("lowntfs-3g", "ntfs-3g")):
        require_tool(tool, package)
    resolved = resolve_elements(spec)
    if workdir.exists():
        shutil.rmtree(workdir)  # leftovers of an interrupted bake are never reused
    workdir.mkdir(parents=True)
    try:
        return _bake(spec, source, virtio_win, workdir, resolved, build_epoch, label or str(source), max_virtual_size)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _bake(spec, source: Path, virtio_win: Path, workdir: Path, resolved, build_epoch: int, label: str,
          max_virtual_size: int) -> BakeResult:
    checked = check_image(source, label=label, max_virtual_size=max_virtual_size)
    partial = workdir / "image.raw.part"
    say(f"convert {source.name} ({checked.format}) to a sparse raw work copy")
    run(["qemu-img", "convert", "-q", *qemu_img_input(checked), "-O", "raw", partial], timeout=6 * 3600)

    with VirtioWin(virtio_win) as media:
        build_epoch = epoch_of(spec, media) if build_epoch is None else build_epoch
        with windows_volume(partial, "raw", workdir / "mnt", writable=True, clock=build_epoch, label=label) as found:
            refuse_unclean_hives(label, {n: st.to_dict() for n, st in hive_states(found).items()})
            facts, selection = _refresh(spec, found, media, partial, workdir, resolved, build_epoch)
        version = media.version
    # unmounted: ntfs-3g has flushed everything
    _check_result(facts, selection)
    target = workdir / "image.raw"
    partial.replace(target)
    facts = _renamed(facts, target)
    qcow2 = _qcow2(target, workdir) if spec.qcow2 else None
    return BakeResult(target, qcow2, facts, version, tuple(selection), tuple(e.name for e in resolved), build_epoch)


def epoch_of(spec: BakeSpec, media: VirtioWin) -> int:
    if spec.epoch:
        return int(dt.datetime.fromisoformat(spec.epoch).replace(tzinfo=dt.timezone.utc).timestamp())
    return media.release_epoch()


def _refresh(spec: BakeSpec, found: WindowsVolume, media: VirtioWin, partial: Path, workdir: Path, resolved,
             build_epoch: int) -> tuple[ImageFacts, list[SelectedDriver]]:
    """Select, stage and register the drivers, run the elements; returns the facts read back and the selection."""
    windows = read_windows(found)
    say(f"found {windows.product_name} (build {windows.build}, {windows.arch}, {windows.control_set}) on partition {found.partition.number}")
    selection = media.select(spec.drivers, os_dir=windows.virtio_os_dir, arch=windows.arch, product=windows.product_name)
    say(f"virtio-win {media.version}: {', '.join(f'{d.name} {d.version}' for d in selection)} for {windows.virtio_os_dir}")
    drivers_dir = workdir / "drivers"
    media.extract(selection, drivers_dir)
    (drivers_dir / "guest-agent").mkdir(parents=True, exist_ok=True)
    for agent in GUEST_AGENT_FILES:
        media.extract_file(agent, drivers_dir / agent)
    hives = _copy_hives_out(found, workdir / "hives")
    stamps = {name: timestamps(copy) for name, copy in hives.items()}  # what was there before the build wrote
    hooks = workdir / "hooks"
    elements.merge_hooks(resolved, hooks)
    environment = element_environment(found, windows, hives, drivers_dir, selection, media.version, build_epoch)
    elements.run_phases(hooks, environment, _log_path(workdir))
    for name, copy in hives.items():
        pin_timestamps(copy, before=stamps[name], to=build_epoch)
    _copy_hives_back(hives, found)
    return read_facts(found, image=str(partial), fmt="raw", virtual_size=image_info(partial, fmt="raw").virtual_size), selection


def _log_path(workdir: Path) -> Path:
    """Outside the work directory, which a failure removes: the log is what explains the failure."""
    logs = state_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"bake-{workdir.name}.log"
    log.unlink(missing_ok=True)
    return log


def element_environment(found, windows, hives: dict[str, Path], drivers_dir: Path, selection, version: str, build_epoch: int) -> dict[str, str]:
    names = [d.name for d in selection]
    return {
        "BAKERY_WINDOWS_ROOT": str(found.root),
        "BAKERY_HIVE_SYSTEM": str(hives["SYSTEM"]),
        "BAKERY_HIVE_SOFTWARE": str(hives["SOFTWARE"]),
        "BAKERY_CONTROL_SET": windows.control_set,
        "BAKERY_CONTROL_SETS": " ".join(windows.control_sets or (windows.control_set,)),
        "BAKERY_WINDOWS_MAJOR": str(windows.major),
        "BAKERY_WINDOWS_MINOR": str(windows.minor),
        "BAKERY_WINDOWS_BUILD": str(windows.build),
        "BAKERY_WINDOWS_SERVER": "1" if windows.server else "0",
        "BAKERY_WINDOWS_ARCH": selection[0].arch if selection else windows.arch.lower(),
        "BAKERY_VIRTIO_OS_DIR": windows.virtio_os_dir,
        "BAKERY_VIRTIO_WIN_VERSION": version,
        "BAKERY_DRIVERS_DIR": str(drivers_dir),
        "BAKERY_DRIVERS": " ".join(names),
        "BAKERY_BOOT_DRIVERS": " ".join(n for n in names if n in BOOT_DRIVERS),
        "BAKERY_STAGING_DIR": STAGING_DIR,
        "BAKERY_IMAGE_LABEL": found.label,
        "BAKERY_BUILD_EPOCH": str(build_epoch),
    }


def _copy_hives_out(found: WindowsVolume, directory: Path) -> dict[str, Path]:
    """Element scripts edit copies: fast (no FUSE round trips per hivex write) and written back once."""
    directory.mkdir(parents=True)
    copies = {}
    for name, path in (("SYSTEM", found.system_hive), ("SOFTWARE", found.software_hive)):
        copies[name] = directory / name
        shutil.copyfile(path, copies[name])
        with Hive(copies[name]):  # opening it proves it is a hive hivex can edit, before any script runs
            pass
    return copies


def _copy_hives_back(copies: dict[str, Path], found: WindowsVolume) -> None:
    for name, path in (("SYSTEM", found.system_hive), ("SOFTWARE", found.software_hive)):
        if copies[name].read_bytes() != path.read_bytes():
            shutil.copyfile(copies[name], path)


def _check_result(facts: ImageFacts, selection: list[SelectedDriver]) -> None:
    """The refresh must have left every selected boot driver bootable and every driver staged."""
    for driver in selection:
        state = facts.drivers[driver.name]
        if driver.name in BOOT_DRIVERS and not state.bootable:
            raise BakeryError(f"bake: after the elements ran, {driver.name} is not bootable (service, file or registration missing)")
        if state.staged_version != driver.version:
            raise BakeryError(f"bake: {driver.name} {driver.version} was selected but {state.staged_version or 'nothing'} is staged")


def _renamed(facts: ImageFacts, target: Path) -> ImageFacts:
    return replace(facts, image=str(target))


def _qcow2(raw: Path, workdir: Path) -> Path:
    target = workdir / "image.qcow2"
    say("write the qcow2 copy and compare it with the raw image")
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", raw, target], timeout=6 * 3600)
    run(["qemu-img", "check", "-q", target], timeout=3600)
    run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", raw, target], timeout=6 * 3600)
    return target
