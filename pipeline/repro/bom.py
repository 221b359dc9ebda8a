"""The SBOM stage: the built image's bill of materials, read offline from its bytes, cached by its content
address and kept in a local store by its own sha256 (the value of the image's `bakery_sbom_sha256`), so
release notes find the SBOM of any release this machine built from that property alone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from pathlib import Path

from pipeline.build.image import BuiltImage
from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.common.toolversions import tool_versions
from pipeline.diskimage.safety import check_image
from pipeline.manifest import Manifest
from pipeline.repro import lock
from pipeline.repro.cache import StageCache
from pipeline.repro.stages import StageIds
from pipeline.sbom import SBOM_FILE, Sbom, build_sbom, load_sbom
from pipeline.windows.inspection import windows_volume
from pipeline.windows.software import read_software

FORMAT = "bakery-sbom/1"
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def store_dir() -> Path:
    """SBOMs by sha256: <state>/sboms/<sha256>.cdx.json."""
    return state_dir() / "sboms"


def stored(sha256: str | None) -> Path | None:
    """The SBOM with this sha256 in the local store (a property's value: checked before it becomes a path)."""
    if not sha256 or not HEX64.fullmatch(sha256):
        return None
    path = store_dir() / f"{sha256}.cdx.json"
    return path if path.is_file() and not path.is_symlink() else None


def sbom_id(manifest: Manifest, stages: StageIds, build_id: str, pins: dict[str, str]) -> str:
    inputs = {"stage": "sbom", "format": FORMAT, "input": stages.build, "build_id": build_id, "name": manifest.name,
              "release_date": manifest.release_date, "pins": pins}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def sbom_of(manifest: Manifest, stages: StageIds, image: BuiltImage, build_id: str, cache: StageCache | None,
            report: Report) -> Sbom | None:
    """The image's SBOM (None, with a line saying why, for an image with no Windows on it)."""
    pins = lock.pins(manifest)
    stage_id = sbom_id(manifest, stages, build_id, pins)
    entry = cache.get("sbom", stage_id) if cache else None
    if entry:
        sbom = load_sbom(entry.file(SBOM_FILE), expected_sha256=entry.record["sha256"])
    else:
        with report.stage("sbom"):
            sbom = _read(manifest, stages, image, build_id, pins)
        if sbom is None:
            report.details["sbom"] = None
            return None
        if cache:
            with tempfile.TemporaryDirectory(prefix="bakery-sbom-", dir=_work()) as scratch:
                cache.put("sbom", stage_id, {SBOM_FILE: sbom.write(Path(scratch) / SBOM_FILE)}, {"sha256": sbom.sha256})
    path = sbom.write(store_dir() / f"{sbom.sha256}.cdx.json")
    summary = sbom.summary()
    report.details["sbom"] = {"path": str(path), **summary}
    say(f"sbom: {summary['windows']}, {summary['updates']} update(s), {summary['drivers']} driver package(s), "
        f"{summary['programs']} program(s), {summary['inputs']} pinned input(s) ({sbom.sha256[:12]})")
    return sbom


def _read(manifest: Manifest, stages: StageIds, image: BuiltImage, build_id: str, pins: dict[str, str]) -> Sbom | None:
    fmt = image.info.format if image.info else "raw"
    with tempfile.TemporaryDirectory(prefix="bakery-sbom-", dir=_work()) as scratch:
        try:
            with windows_volume(image.path, fmt, Path(scratch), writable=False, label=manifest.name) as found:
                software = read_software(found)
        except BakeryError as exc:
            if image.facts is not None:  # a Windows image the build inspected: its inventory must be readable
                raise
            say(f"sbom: none: {exc.one_line()}")
            return None
    return build_sbom(software, image_name=manifest.name, release_date=manifest.release_date, build_id=build_id,
                      build_stage=stages.build, pins=pins, tools=tool_versions())


def read_image_sbom(path: Path, *, name: str, release_date: str, build_id: str, build_stage: str, workdir: Path) -> Sbom:
    """The SBOM of an image file nobody recorded one for (a release older than SBOMs, or one built elsewhere): read
    from its bytes after the gate every untrusted image passes. Its pins are unknown, so it lists none, and its
    sha256 is not the one a bake would have recorded."""
    checked = check_image(path, label=name)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bakery-sbom-", dir=workdir) as scratch:
        with windows_volume(path, checked.format, Path(scratch), writable=False, label=name) as found:
            software = read_software(found)
    return build_sbom(software, image_name=name, release_date=release_date, build_id=build_id, build_stage=build_stage,
                      pins={}, tools=tool_versions())


def keep_boot(build_id: str, picture: Path | None, verdict: str | None, machine: str) -> None:
    """The canary's picture and verdict of a release, by its build id (the image's bakery_build_id), for release
    notes made later from the cloud: <state>/boots/<build id>.png and .json."""
    if not HEX64.fullmatch(build_id) or verdict is None:
        return
    folder = state_dir() / "boots"
    folder.mkdir(parents=True, exist_ok=True)
    if picture:
        shutil.copyfile(picture, folder / f"{build_id}.png")
    write_atomically(folder / f"{build_id}.json", json.dumps({"verdict": verdict, "machine": machine,
                                                              "picture": bool(picture)}, sort_keys=True) + "\n")


def kept_boot(build_id: str | None) -> tuple[Path | None, str | None, str]:
    """(picture, verdict, machine) keep_boot kept for this build id, or (None, None, "")."""
    if not build_id or not HEX64.fullmatch(build_id):
        return None, None, ""
    folder = state_dir() / "boots"
    try:
        data = json.loads((folder / f"{build_id}.json").read_text())
    except (OSError, ValueError):
        return None, None, ""
    picture = folder / f"{build_id}.png"
    return (picture if data.get("picture") and picture.is_file() else None, str(data.get("verdict")), str(data.get("machine", "")))


def _work() -> Path:
    work = state_dir() / "work"
    work.mkdir(parents=True, exist_ok=True)
    return work
