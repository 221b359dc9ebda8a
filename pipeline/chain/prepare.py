"""Everything before the first call to Glance: the manifest, its lock, the build (or its preview), the property set and the canary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from pipeline import canary
from pipeline.build import stage as build_stage
from pipeline.build.image import BuiltImage, discard, origin_sha256
from pipeline.chain.options import JobOptions
from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.manifest import Manifest, load_manifest, parse_variables
from pipeline.properties import lint
from pipeline.properties import render as properties
from pipeline.publish.measure import Measurement
from pipeline.repro import lock as lockfile
from pipeline.repro import runner
from pipeline.repro.bom import keep_boot, sbom_of
from pipeline.repro.cache import StageCache
from pipeline.repro.lock import git_commit
from pipeline.repro.stages import StageIds, stage_ids
from pipeline.repro.stages import build_id as release_build_id
from pipeline.sbom import Sbom
from pipeline.sbom.document import PROPERTY as SBOM_PROPERTY


@dataclass
class Prepared:
    manifest: Manifest
    image: BuiltImage
    propset: properties.PropertySet
    build_id: str
    stages: StageIds
    cache: StageCache | None
    expected: Measurement | None = None  # what the image's bytes must measure (an artifact's record)
    sbom: Sbom | None = None  # the image's bill of materials (None: no Windows on it, or not built yet)
    canary: runner.CanaryVerdict | None = None  # the canary's verdict, machine and picture of the boot


def prepare(options: JobOptions, report: Report, *, convert: bool, manifest: Manifest | None = None) -> Prepared:
    """Everything up to (not including) the first call to Glance."""
    with report.stage("manifest"):
        manifest = manifest or load(options, report)
        used_lock = _check_lock(manifest, options, report)
    stages = stage_ids(manifest)
    report.details["stages"] = stages.to_dict()
    build_id = release_build_id(manifest, template_sha256=properties.template_sha256(), stages=stages)
    report.build_id = build_id
    cache = StageCache() if options.use_cache else None
    if convert:
        _lint_before_building(manifest, build_id)
    image = runner.built(manifest, stages, cache, report) if convert else _preview(manifest, stages, cache, report)
    report.built = image.to_dict()
    provenance = {"lock_sha256": used_lock.sha256 if used_lock else None, "manifest_commit": git_commit(manifest.path),
                  "build_stage": stages.build}
    sbom = verdict = None
    try:
        if convert:
            sbom = sbom_of(manifest, stages, image, build_id, cache, report)
        with report.stage("properties"):
            propset = properties.render(manifest, image, build_id=build_id, provenance=provenance)
        if convert:  # proven on the machine its properties describe, before it can be uploaded anywhere
            verdict = runner.canaried(manifest, stages, image, propset.properties, cache, report)
            recorded = {SBOM_PROPERTY: sbom.sha256} if sbom else {}
            propset = dataclasses.replace(propset, properties={**propset.properties, **verdict.properties, **recorded})
            keep_boot(build_id, verdict.picture, verdict.properties.get("bakery_canary"), verdict.machine)
    except BaseException:
        discard(image)
        raise
    report.lint = [f.to_dict() for f in propset.findings]
    return Prepared(manifest, image, propset, build_id, stages, cache, sbom=sbom, canary=verdict)


def _lint_before_building(manifest: Manifest, build_id: str) -> None:
    """The rules that need no image run before an install or bake that may take hours; the rest after."""
    unbuilt = BuiltImage(None, None, None, origin_sha256(manifest), temporary=False)
    propset = properties.render(manifest, unbuilt, build_id=build_id, enforce=False)
    if lint.errors(list(propset.findings)):
        raise properties.lint_failed(manifest, propset.findings)
    canary.check(manifest, propset.properties)


def _check_lock(manifest: Manifest, options: JobOptions, report: Report) -> lockfile.Lock | None:
    path = options.lock or lockfile.lock_path(manifest.path)
    if not path.is_file():
        if options.lock:
            raise BakeryError(f"{path}: no such lock file")
        report.details["lock"] = None
        return None
    lock = lockfile.load(path)
    lockfile.verify(manifest, lock)
    lockfile.remember(lock)
    report.details["lock"] = {"path": str(path), "sha256": lock.sha256}
    say(f"lock {path.name}: every input matches ({lock.sha256[:12]})")
    return lock


def _preview(manifest: Manifest, stages: StageIds, cache: StageCache | None, report: Report) -> BuiltImage:
    """What plan shows: the cached build when build-and-publish would use it, else the source as it is (or
    nothing yet for an install). Plan refuses exactly what build-and-publish refuses."""
    cached = runner.cached_build(manifest, stages, cache, report)
    if cached:
        return cached
    pinned = runner.fetch_inputs(manifest, report)
    if manifest.install:
        return BuiltImage(None, None, pinned["media"], origin_sha256(manifest), temporary=False)
    return build_stage.preview(manifest, pinned["source"])


def load(options: JobOptions, report: Report) -> Manifest:
    manifest = load_manifest(options.manifest, release_date=options.release_date, variables=parse_variables(list(options.variables)))
    properties.check_suppressions(manifest)
    summarise(report, manifest)
    return manifest


def summarise(report: Report, manifest: Manifest) -> None:
    report.manifest = {"path": str(manifest.path), "sha256": manifest.sha256, "release_date": manifest.release_date, "name": manifest.name}


def recorded_measurement(cache: StageCache | None, stages: StageIds) -> Measurement | None:
    entry = cache.get("measure", stages.measure) if cache else None
    if entry is None:
        return None
    record = entry.record
    return Measurement(size=record["size"], md5=record["md5"], sha512=record["sha512"])


def remember_measurement(prepared: Prepared, measured: Measurement) -> None:
    """The measure stage's record, so that the next run of the same build reads no byte to know it."""
    if prepared.cache:
        prepared.cache.put("measure", prepared.stages.measure, {}, {"size": measured.size, "md5": measured.md5,
                                                                     "sha512": measured.sha512})
