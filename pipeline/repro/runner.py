"""The build stages run through the stage cache: fetch the pinned inputs, install, bake or convert.

A stage whose id is in the cache is not run again; its output is taken from the entry. Without a cache
(`--no-cache`, and rebuilds, where a cached output would prove nothing) every stage runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline import canary
from pipeline.build import inputs
from pipeline.build import provision as provision_stage
from pipeline.build import stage as build_stage
from pipeline.build.image import BuiltImage, RecordedBake, RecordedFacts, origin_sha256
from pipeline.build.install import windows_setup
from pipeline.common.digests import DigestMemo
from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.common.run import run
from pipeline.diskimage.info import GiB
from pipeline.diskimage.safety import UnsafeImage, check_image
from pipeline.manifest import Manifest
from pipeline.repro.cache import Entry, StageCache
from pipeline.repro.stages import StageIds, canary_id

PICTURE = "boot.png"


def _cacheable(image: BuiltImage) -> bool:
    """A raw source used as it is needs no cache entry: it is its own output."""
    return image.temporary


def _from_cache(entry: Entry, manifest: Manifest) -> BuiltImage:
    """The cached output, after the same gate as any image: a cache directory is a file system too."""
    record = entry.record
    raw = entry.file("image.raw")
    checked = check_image(raw, label=f"stage cache entry build/{entry.id[:12]} ({raw})", declared="raw",
                          max_virtual_size=manifest.max_virtual_gib * GiB)
    facts = RecordedFacts(record["facts"], record["lint_facts"]) if record.get("facts") else None
    baked = RecordedBake(record["bake"]) if record.get("bake") else None
    return BuiltImage(raw, checked.info, Path(record["source_path"]), origin_sha256(manifest), temporary=False,
                      facts=facts, baked=baked, installed_virtio_win=record.get("installed_virtio_win"),
                      cache_entry=f"{entry.stage}/{entry.id}", source_format=record.get("source_format"))


def cached_build(manifest: Manifest, stages: StageIds, cache: StageCache | None, report: Report) -> BuiltImage | None:
    """The build stage's cached output, if there is a usable one: what build-and-publish and plan both use.

    Content addressing may serve a build whose input is not at hand (the pin says what the bytes were);
    that is said, not hidden. An input that is at hand but malformed, or a declared format that contradicts
    what the cached bytes were built from, is refused exactly as without the cache."""
    entry = cache.get("build", stages.build) if cache else None
    if entry is None:
        return None
    absent = _check_inputs_beside_cache(manifest, entry)
    try:
        image = _from_cache(entry, manifest)
    except UnsafeImage as refused:
        say(f"cache: {refused.one_line()}; dropping the entry and building again")
        cache.drop("build", stages.build)
        return None
    say(f"cache: the {entry.record.get('stage', 'build')} stage's output {stages.build[:12]} is cached: not building again")
    report.details["cache"] = {"build": "hit"}
    if absent:
        note = f"{'; '.join(absent)}: served from the stage cache (content-addressed by the pins)"
        say(note)
        report.details["inputs_not_at_hand"] = absent
    return image


def _check_inputs_beside_cache(manifest: Manifest, entry: Entry) -> list[str]:
    """Refuse a malformed input that is at hand; list the ones that are not at hand."""
    absent = []
    source = manifest.source
    if source:
        label = inputs.source_label(manifest)
        local = inputs.local_path(source)
        if local is None:
            absent.append(f"{label} not fetched")
        elif not local.exists():
            absent.append(f"{label} is not at hand")
        else:
            check_image(local, label=label, declared=source.format, max_virtual_size=manifest.max_virtual_gib * GiB)
        recorded = entry.record.get("source_format")
        if source.format and recorded and source.format != recorded:
            raise UnsafeImage(f"{label}: declared format {source.format}, but the pinned bytes are {recorded} (as recorded when "
                              f"they were built): refused; fix the format")
    if manifest.bake:
        virtio = inputs.local_path(manifest.bake.virtio_win)
        if virtio is None or not virtio.exists():
            absent.append(f"{inputs.source_label(manifest, manifest.bake.virtio_win)} is not at hand")
    return absent


def in_cache(cache: StageCache, stages: StageIds, image: BuiltImage) -> BuiltImage:
    """The built image as an entry of the stage cache (for the cache handoff): as it is when it already is one;
    else a work file of ours is moved in, and a source published as it is copied in (sparse)."""
    if image.cache_entry:
        return image
    if not image.temporary:
        workdir = _private_dir(state_dir() / "work", f"{stages.build[:16]}-handoff-")
        run(["cp", "--sparse=always", "--reflink=auto", str(image.path), str(workdir / "image.raw")], timeout=None)
        image = dataclasses.replace(image, path=workdir / "image.raw", temporary=True)
    return _to_cache(cache, stages.build, image)


def _to_cache(cache: StageCache, stage_id: str, image: BuiltImage) -> BuiltImage:
    """Move a freshly built image into the cache; the work directory it came from is removed."""
    record = {
        "source_path": str(image.source_path),
        "facts": image.facts.to_dict() if image.facts else None,
        "lint_facts": image.facts.lint_facts() if image.facts else None,
        "bake": image.baked.to_dict() if image.baked else None,
        "installed_virtio_win": image.installed_virtio_win,
        "source_format": image.source_format,
    }
    files = {"image.raw": image.path}
    qcow2 = getattr(image.baked, "qcow2", None)
    if qcow2:
        files["image.qcow2"] = qcow2
        record["bake"] = {**record["bake"], "qcow2": "image.qcow2 in the cache entry"}
    workdir = image.path.parent
    entry = cache.put("build", stage_id, files, record)
    shutil.rmtree(workdir, ignore_errors=True)
    return dataclasses.replace(image, path=entry.file("image.raw"), temporary=False, cache_entry=f"build/{stage_id}")


def fetch_inputs(manifest: Manifest, report: Report) -> dict[str, Path]:
    """Every pinned input as a local file whose sha256 matches its pin."""
    state = state_dir()
    memo, downloads = DigestMemo(state / "memo"), state / "downloads"
    pinned = {}
    with report.stage("source"):
        if manifest.install:
            pinned["media"] = inputs.fetch_pinned(manifest.install.media, manifest, downloads, memo)
            pinned["install_drivers"] = inputs.fetch_pinned(manifest.install.virtio_win, manifest, downloads, memo)
        else:
            pinned["source"] = inputs.locate_source(manifest, downloads, memo)
        if manifest.bake:
            pinned["virtio_win"] = inputs.fetch_pinned(manifest.bake.virtio_win, manifest, downloads, memo)
        for step in manifest.provision.steps if manifest.provision else ():
            if step.file:
                pinned[f"{step.name}.file"] = inputs.fetch_pinned(step.file, manifest, downloads, memo)
            if step.config:
                pinned[f"{step.name}.config"] = inputs.fetch_pinned(step.config, manifest, downloads, memo)
    return pinned


def built(manifest: Manifest, stages: StageIds, cache: StageCache | None, report: Report) -> BuiltImage:
    """The raw image to publish: from the stage cache when its inputs did not change, else built (and cached)."""
    cached = cached_build(manifest, stages, cache, report)
    if cached:
        return cached
    report.details["cache"] = {"build": "miss" if cache else "disabled"}
    pinned = fetch_inputs(manifest, report)
    installed_version = None
    source_path = pinned.get("source")
    scratch = []  # work disks of the stages before the build, when no cache keeps them
    if manifest.install:
        source_path, installed_version = _installed(manifest, pinned, stages, cache, report)
        scratch.append(source_path.parent)
    pinned_format = None
    if manifest.provision:
        try:
            source_path, pinned_format = _provisioned(manifest, source_path, pinned, stages, cache, report)
        finally:
            if not cache:
                for directory in scratch:
                    shutil.rmtree(directory, ignore_errors=True)
        scratch = [source_path.parent]
    workdir = state_dir() / "work" / stages.build
    try:
        with report.stage("build"):
            image = build_stage.build(manifest, source_path, workdir, virtio_win=pinned.get("virtio_win"))
            if manifest.install:
                image = dataclasses.replace(image, installed_virtio_win=installed_version)
            if pinned_format:  # what the cache records of the source is the pinned file's format, not the stage output's
                image = dataclasses.replace(image, source_format=pinned_format)
    finally:
        if not cache:  # the installed or provisioned disk: the built image is what counts now
            for directory in scratch:
                shutil.rmtree(directory, ignore_errors=True)
    if cache and _cacheable(image):
        image = _to_cache(cache, stages.build, image)
    return image


def _provisioned(manifest: Manifest, disk: Path, pinned: dict[str, Path], stages: StageIds, cache: StageCache | None,
                 report: Report) -> tuple[Path, str]:
    """The disk the provisioning steps leave, and the format the gate found the disk they start from in; cached
    by the provision stage's id, so a rerun boots nothing."""
    checked = build_stage.gate(manifest, disk, "install" if manifest.install else None)  # instead of the build's own gate
    entry = cache.get("provision", stages.provision) if cache else None
    if entry:
        say(f"cache: the provision stage's output {stages.provision[:12]} is cached: not booting the steps again")
        report.details["cache"]["provision"] = "hit"
        report.details["provision"] = {**entry.record.get("result", {}), "cached": True}
        return entry.file("provisioned.qcow2"), checked.format
    workdir = _private_dir(state_dir() / "work", f"{stages.provision[:16]}-provision-")
    with report.stage("provision"), _removed_on_failure(workdir):
        provisioned = provision_stage.provision(manifest, checked, pinned, workdir, logs=_private_dir(state_dir() / "logs", f"provision-{stages.provision[:16]}-"),
                                                record=lambda result: report.details.__setitem__("provision", result.to_dict()))
    if not cache:
        return provisioned, checked.format
    entry = cache.put("provision", stages.provision, {"provisioned.qcow2": provisioned}, {"result": report.details["provision"]})
    shutil.rmtree(workdir, ignore_errors=True)
    return entry.file("provisioned.qcow2"), checked.format


def build_uncached(manifest: Manifest, stages: StageIds, report: Report) -> BuiltImage:
    """Build from the inputs, ignoring (and not filling) the stage cache: what a rebuild must do."""
    return built(manifest, stages, None, report)


def _installed(manifest: Manifest, pinned: dict[str, Path], stages: StageIds, cache: StageCache | None,
               report: Report) -> tuple[Path, str | None]:
    """The disk Setup leaves: cached by the install stage's id, so a new virtio-win alone does not reinstall."""
    entry = cache.get("install", stages.install) if cache else None
    if entry:
        say(f"cache: the install stage's output {stages.install[:12]} is cached: not installing again")
        report.details["cache"]["install"] = "hit"
        return entry.file("installed.qcow2"), entry.record.get("virtio_win_version")
    workdir = state_dir() / "work" / f"{stages.install}-install"
    with report.stage("install"), _removed_on_failure(workdir):
        installed = windows_setup.install(manifest, pinned["media"], pinned["install_drivers"], workdir, build_id=stages.install,
                                          record=lambda result: report.details.__setitem__("install", result.to_dict()))
    if not cache:
        return installed.disk, installed.virtio_win_version
    entry = cache.put("install", stages.install, {"installed.qcow2": installed.disk},
                      {"virtio_win_version": installed.virtio_win_version, "answer_sha256": installed.answer_sha256})
    shutil.rmtree(installed.disk.parent, ignore_errors=True)
    return entry.file("installed.qcow2"), installed.virtio_win_version


@dataclasses.dataclass(frozen=True)
class CanaryVerdict:
    properties: dict[str, str]  # {"bakery_canary": "ok accelerator=... duration_s=N"}, or {} without a canary
    picture: Path | None = None  # the guest's screen when it was judged ready (PNG)
    machine: str = ""  # the machine it booted, as explain derives it from the properties


def canaried(manifest: Manifest, stages: StageIds, image: BuiltImage, properties: dict[str, str], cache: StageCache | None,
             report: Report) -> CanaryVerdict:
    """The canary's verdict as the property that records it, with the picture of the boot; from the cache when
    these bytes already booted on this machine (the same derived hardware, limits and accelerator), else by booting them."""
    if manifest.canary is None:
        return CanaryVerdict({})
    hardware = canary.plan(manifest, properties)
    stage_id = canary_id(stages, hardware, manifest)
    entry = cache.get("canary", stage_id) if cache else None
    if entry:
        say(f"cache: the canary already booted these bytes on this machine ({stage_id[:12]}): not booting again")
        picture = entry.file(PICTURE) if PICTURE in entry.record.get("files", {}) else None
        report.details["canary"] = {**entry.record["result"], "cached": True, "picture": str(picture) if picture else None}
        return CanaryVerdict({"bakery_canary": entry.record["property"]}, picture, hardware.summary)
    logs = _private_dir(state_dir() / "logs", f"canary-{stage_id[:16]}-")
    workdir = _private_dir(state_dir() / "work", f"{stage_id[:16]}-canary-")
    try:
        with report.stage("canary"):
            result = canary.run_canary(manifest, image.path, hardware, workdir=workdir, logs=logs,
                                       record=lambda result: report.details.__setitem__("canary", result.to_dict()))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    picture = result.vm.screenshot if result.vm else None
    if cache:
        files = {}
        if picture:  # the log folder keeps its own; the entry gets a copy
            shutil.copyfile(picture, logs / PICTURE)
            files[PICTURE] = logs / PICTURE
        entry = cache.put("canary", stage_id, files, {"property": result.property_value, "result": result.to_dict()})
        picture = entry.file(PICTURE) if picture else None
    report.details["canary"]["picture"] = str(picture) if picture else None
    return CanaryVerdict({"bakery_canary": result.property_value}, picture, hardware.summary)


@contextlib.contextmanager
def _removed_on_failure(workdir: Path) -> Iterator[None]:
    """A stage's work directory goes when the stage fails or is cancelled (SIGTERM, Ctrl-C); on success the
    caller keeps what it made there until it is in the cache."""
    try:
        yield
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _private_dir(parent: Path, prefix: str) -> Path:
    """A directory of this run alone: two builds of the same stage at once never share a work disk or a log."""
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
