"""The chain: the one place that orders the stages.

manifest -> (lock check) -> build (install, bake or convert; through the stage cache) -> properties (+ lint)
-> publish (measured in the same pass as the upload, verified) -> release (demote the previous one).

Everything that can be checked without touching Glance is checked before connecting to it, so a bad
manifest never reaches the server; and the previous release is only demoted once the new one is verified.
The partial runs of the chain live here too: plan (the dry run), lint and explain of a manifest, lock,
inspect (of a file, or of a Glance image fetched first), bake and publish (the chain split at an artifact,
for CI jobs), lifecycle (past releases), and the CI pipeline of a catalog.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import canary
from pipeline.build import stage as build_stage
from pipeline.build.image import BuiltImage, discard, origin_sha256
from pipeline.ci import catalog as ci_catalog
from pipeline.ci import gitlab
from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.paths import state_dir
from pipeline.common.progress import progress, say
from pipeline.common.report import Report
from pipeline.diskimage.info import GiB, image_info
from pipeline.diskimage.safety import check_image
from pipeline.glance.connect import Target, connect
from pipeline.glance.errors import describe as describe_client_error
from pipeline.glance.images import download, fetch_image
from pipeline.manifest import Manifest, TargetSpec, load_manifest, parse_release_date, parse_variables
from pipeline.properties import explain as explain_stage
from pipeline.properties import lint
from pipeline.properties import render as properties
from pipeline.publish import lifecycle as lifecycle_stage
from pipeline.publish import methods, release
from pipeline.publish import upload as publish
from pipeline.publish.journal import Journal
from pipeline.publish.measure import Measurement, measure_file, remembered
from pipeline.repro import artifact, runner
from pipeline.repro import lock as lockfile
from pipeline.repro.cache import StageCache
from pipeline.repro.lock import git_commit
from pipeline.repro.stages import StageIds, stage_ids
from pipeline.repro.stages import build_id as release_build_id
from pipeline.windows.inspection import ImageFacts, inspect_image


@dataclass(frozen=True)
class JobOptions:
    manifest: Path
    cloud: str | None = None  # one cloud; `clouds` for several (--cloud A --cloud B)
    release_date: str | None = None
    variables: tuple[str, ...] = ()
    allow_older: bool = False
    use_cache: bool = True
    lock: Path | None = None  # default: the manifest's .lock file when there is one
    clouds: tuple[str, ...] = ()

    @property
    def cloud_names(self) -> tuple[str, ...]:
        return self.clouds or ((self.cloud,) if self.cloud else ())


@dataclass(frozen=True)
class _Destination:
    """One cloud this release goes to: the connection (or why there is none), and what differs there."""

    target: Target | None
    spec: TargetSpec
    error: str | None = None

    @property
    def name(self) -> str:
        return self.target.name if self.target else self.spec.cloud

    @property
    def visibility(self) -> str | None:
        return self.spec.visibility


@dataclass
class TargetResult:
    name: str
    ok: bool
    target: dict
    route: dict | None = None
    image: dict | None = None
    demoted: list[dict] = field(default_factory=list)
    cleaned_up: list[str] = field(default_factory=list)
    release: dict | None = None
    lifecycle: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Prepared:
    manifest: Manifest
    image: BuiltImage
    propset: properties.PropertySet
    build_id: str
    stages: StageIds
    cache: StageCache | None
    expected: Measurement | None = None  # what the image's bytes must measure (an artifact's record)


def _prepare(options: JobOptions, report: Report, *, convert: bool, manifest: Manifest | None = None) -> _Prepared:
    """Everything up to (not including) the first call to Glance."""
    with report.stage("manifest"):
        manifest = manifest or _load(options, report)
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
    try:
        with report.stage("properties"):
            propset = properties.render(manifest, image, build_id=build_id, provenance=provenance)
        if convert:  # proven on the machine its properties describe, before it can be uploaded anywhere
            verdict = runner.canaried(manifest, stages, image, propset.properties, cache, report)
            propset = dataclasses.replace(propset, properties={**propset.properties, **verdict})
    except BaseException:
        discard(image)
        raise
    report.lint = [f.to_dict() for f in propset.findings]
    return _Prepared(manifest, image, propset, build_id, stages, cache)


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


def write_lock(options: JobOptions, report: Report) -> Report:
    """Resolve every input of the manifest's build (each file checked against its pin) into its lock file."""
    manifest = _load(options, report)
    runner.fetch_inputs(manifest, report)
    written = lockfile.write(manifest, options.lock)
    report.details["lock"] = {"path": str(written.path), "sha256": written.sha256, "pins": written.pins}
    say(f"wrote {written.path} ({len(written.pins)} pins, sha256 {written.sha256[:12]})")
    report.ok = True
    return report


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


def build_and_publish(options: JobOptions, report: Report, *, target: Target | None = None) -> Report:
    """Build once, then publish, verify and release to every target: the first alone (a corrupt cache entry
    is rebuilt there), the others concurrently. A failed target never demotes its previous release; the
    targets that succeeded keep their verified release; any failure makes the run fail."""
    prepared = [_prepare(options, report, convert=True)]  # a cell: a rebuild on the first target replaces it
    try:
        return _publish_everywhere(prepared, options, report, target)
    finally:
        discard(prepared[0].image)


def bake(options: JobOptions, report: Report, *, out: Path, handoff: str = "artifact") -> Report:
    """`invoke bake`: the chain up to the measured image and its property set, written as an artifact; no Glance.
    handoff "cache": the image stays in the (shared) stage cache and the artifact holds only its record."""
    if handoff not in ("artifact", "cache"):
        raise BakeryError(f"--handoff {handoff}: expected artifact or cache")
    if handoff == "cache" and not options.use_cache:
        raise BakeryError("--handoff cache needs the stage cache; drop --no-cache")
    prepared = _prepare(options, report, convert=True)
    try:
        if handoff == "cache":
            prepared = dataclasses.replace(prepared, image=runner.in_cache(prepared.cache, prepared.stages, prepared.image))
        known = _recorded_measurement(prepared.cache, prepared.stages) if prepared.image.cache_entry else None
        lock = report.details.get("lock")
        with report.stage("artifact"), progress(f"artifact {prepared.image.path.name}", prepared.image.path.stat().st_size) as advance:
            written = artifact.write(out, image=prepared.image.path, manifest=prepared.manifest, build_id=prepared.build_id,
                                     stages=prepared.stages, measured=known,
                                     virtual_size=prepared.image.info.virtual_size if prepared.image.info else None,
                                     propset=prepared.propset, lock_file=Path(lock["path"]) if lock else None,
                                     provenance={"lock_sha256": lock["sha256"] if lock else None,
                                                 "manifest_commit": git_commit(prepared.manifest.path)},
                                     facts=prepared.image.facts, virtio_win_version=prepared.image.virtio_win_version,
                                     source_sha256=prepared.image.source_sha256, move=prepared.image.temporary, on_read=advance,
                                     cache_entry=prepared.image.cache_entry if handoff == "cache" else None)
        if known is None:
            _remember_measurement(prepared, written.measurement)
    finally:
        discard(prepared.image)
    report.details["artifact"] = written.to_dict()
    say(f"artifact {out}: {written.id[:16]} (build {prepared.build_id[:12]}, {written.measurement.size:,} bytes)")
    report.ok = True
    return report


def publish_artifact(options: JobOptions, report: Report, *, artifact_dir: Path, target: Target | None = None) -> Report:
    """`invoke publish --artifact DIR`: the publish half of build-and-publish, for the bytes a bake job made.
    The upload measures them in its single pass against the record: other bytes are never released."""
    baked = artifact.load(artifact_dir)
    manifest = baked.manifest()
    properties.check_suppressions(manifest)
    _summarise(report, manifest)
    report.build_id = baked.build_id
    report.details["artifact"] = baked.to_dict()
    image = BuiltImage(baked.image_path, image_info(baked.image_path, fmt="raw"), manifest.path, baked.source_sha256,
                       temporary=False, facts=baked.facts, baked=baked.bake)
    propset = _rendered_again(baked, manifest, image)
    report.lint = [f.to_dict() for f in propset.findings]
    prepared = _Prepared(manifest, image, propset, baked.build_id, baked.stages, None, expected=baked.measurement)
    return _publish_everywhere([prepared], options, report, target)


CANARY_VERDICT = re.compile(r"^ok accelerator=(kvm|tcg) duration_s=\d{1,6}$")


def _rendered_again(baked: artifact.Artifact, manifest: Manifest, image: BuiltImage) -> properties.PropertySet:
    """The record's property set, as build-and-publish would have rendered and linted it: its build id and every
    property are computed again from the record's manifest and facts, and a record that says otherwise is
    refused (an edited record is re-hashed as easily as it is edited)."""
    where = baked.root / artifact.RECORD
    build_id = release_build_id(manifest, template_sha256=properties.template_sha256(), stages=baked.stages)
    if build_id != baked.build_id:
        raise BakeryError(f"{where}: build_id {baked.build_id[:16]}... is not the one its manifest, stages and this bakery's "
                          f"property template give ({build_id[:16]}...)",
                          hint="publish with the checkout that baked it (same bakery version and templates), or bake again")
    recorded = baked.record["provenance"]
    propset = properties.render(manifest, image, build_id=build_id, enforce=False, provenance={
        "lock_sha256": recorded.get("lock_sha256"), "manifest_commit": recorded.get("manifest_commit"), "build_stage": baked.stages.build})
    if lint.errors(list(propset.findings)):  # the same full lint as build-and-publish, on the record's own manifest
        raise properties.lint_failed(manifest, propset.findings, file=f"{where}: manifest")
    expected = dict(propset.properties)
    verdict = baked.record["properties"].get("bakery_canary")
    if manifest.canary and verdict is not None:
        if not CANARY_VERDICT.fullmatch(verdict):
            raise BakeryError(f"{where}: properties.bakery_canary: expected the canary's verdict (ok accelerator=... duration_s=N), "
                              f"got {verdict!r}", hint="bake again; an artifact is never edited")
        expected["bakery_canary"] = verdict
    elif manifest.canary:
        raise BakeryError(f"{where}: properties.bakery_canary: missing, but the manifest has a canary", hint="bake again")
    for section, want in (("properties", expected), ("core", propset.core)):
        got = baked.record[section]
        for key in sorted(set(want) | set(got)):
            if got.get(key) != want.get(key):
                raise BakeryError(f"{where}: {section}.{key} is {_shown(got.get(key))}, but its manifest and facts render "
                                  f"{_shown(want.get(key))}: the record was edited after the bake", hint="bake again; an artifact is never edited")
    return dataclasses.replace(propset, properties=expected)


def _shown(value) -> str:
    return "absent" if value is None else repr(value)


def _publish_everywhere(prepared: list, options: JobOptions, report: Report, target: Target | None) -> Report:
    """Every target of the run: the first alone, the others concurrently (build_and_publish says why)."""
    with report.stage("connect"):
        destinations = _destinations(prepared[0].manifest, options, target)
    report.target = _first_target(destinations)
    results = [_publish_to(destinations[0], prepared, options, report, alone=len(destinations) == 1)]
    if len(destinations) > 1:
        with ThreadPoolExecutor(max_workers=min(4, len(destinations) - 1), thread_name_prefix="target") as pool:
            results += pool.map(lambda d: _publish_to(d, prepared, options, report, alone=False), destinations[1:])
    _record(report, results)
    failed = [r for r in results if not r.ok]
    if failed:
        raise BakeryError(f"{len(failed)} of {len(results)} targets failed: " + "; ".join(f"{r.name}: {r.error}" for r in failed),
                          hint="the targets that succeeded keep their verified release; run again for the others")
    report.ok = True
    return report


def _first_target(destinations: list[_Destination]) -> dict:
    first = destinations[0]
    return first.target.to_dict() if first.target else {"name": first.name, "error": first.error}


def _destinations(manifest: Manifest, options: JobOptions, target: Target | None) -> list[_Destination]:
    if target is not None:
        return [_Destination(target, TargetSpec(target.name))]
    named = {spec.cloud: spec for spec in manifest.targets}
    specs = [named.get(name, TargetSpec(name)) for name in options.cloud_names] or list(manifest.targets)
    if len(specs) <= 1:  # one target: a connection failure is the run's failure, as it always was
        spec = specs[0] if specs else TargetSpec("default")
        return [_Destination(connect(spec.cloud if specs else None), spec)]
    destinations = []
    for spec in specs:  # several: a cloud that cannot be reached is that target's failure, not the others'
        try:
            destinations.append(_Destination(connect(spec.cloud), spec))
        except BakeryError as exc:
            destinations.append(_Destination(None, spec, exc.one_line()))
    return destinations


def _publish_to(destination: _Destination, prepared: list, options: JobOptions, report: Report, *, alone: bool) -> TargetResult:
    target = destination.target
    if target is None:
        return TargetResult(destination.name, False, {"name": destination.name}, error=destination.error)
    result = TargetResult(target.name, False, target.to_dict())
    try:
        _publish(destination, prepared, options, report, result)
        result.ok = True
    except (BakeryError, Exception) as exc:
        if alone:
            raise
        described = describe_client_error(exc)
        result.error = exc.one_line() if isinstance(exc, BakeryError) else (described[0] if described else f"{type(exc).__name__}: {exc}")
        say(f"{target.name}: failed: {result.error}")
    return result


def _publish(destination: _Destination, prepared: list, options: JobOptions, report: Report, result: TargetResult) -> None:
    target, manifest = destination.target, prepared[0].manifest
    memo = DigestMemo(state_dir() / "memo")
    journal = Journal(state_dir() / "journal", target)
    result.cleaned_up = journal.sweep()
    report.details.setdefault("journal_unreadable", []).extend(journal.unreadable)
    spec = destination.spec.upload or manifest.upload
    chosen = methods.route(target, spec)
    result.route = chosen.to_dict()
    published = _reuse_if_published(target, prepared[0], memo, report)
    release.to_supersede(target, manifest, new_id=published.id if published else None, allow_older=options.allow_older)
    if published is None:
        published, prepared[0] = _upload(target, prepared[0], memo, journal, report, options, chosen,
                                         destination.visibility or manifest.visibility)
    with report.stage("release"):
        settled = release.release(target, manifest, published.id, allow_older=options.allow_older)
    result.demoted = [d.to_dict() for d in settled.demoted]
    result.release = settled.to_dict()
    final = target.glance.images.get(published.id)
    result.image = {**publish.published_from(final, uploaded=published.uploaded).to_dict(), "sent_bytes": published.sent_bytes}
    if manifest.release.lifecycle.active:
        with report.stage("lifecycle"):
            carried = _carry_out_lifecycle(target, manifest, today=None, apply=True)
        result.lifecycle = carried.to_dict()
        _raise_if_failed(carried, target, manifest, released=True)


def lifecycle(options: JobOptions, report: Report, *, apply: bool, today: str | None = None) -> Report:
    """`invoke lifecycle`: per target, what release.lifecycle asks for each past release (and, with apply, do it)."""
    manifest = _load(options, report)
    if not manifest.release.lifecycle.active:
        raise manifest.error(("release", "lifecycle"), "no lifecycle policy: expected keep_visible or a *_after_days setting")
    with report.stage("connect"):
        destinations = _destinations(manifest, options, None)
    report.target = _first_target(destinations)
    report.details["targets"] = []
    for destination in destinations:
        if destination.target is None:
            raise BakeryError(f"{destination.name}: {destination.error}")
        carried = _carry_out_lifecycle(destination.target, manifest, today=today, apply=apply)
        report.details["targets"].append({"name": destination.name, "applied": apply, "plan": carried.to_dict()})
        _raise_if_failed(carried, destination.target, manifest, released=False)
    report.ok = True
    return report


def _carry_out_lifecycle(target: Target, manifest: Manifest, *, today: str | None, apply: bool) -> lifecycle_stage.LifecyclePlan:
    try:
        day = dt.date.fromisoformat(parse_release_date(today))
    except BakeryError:
        raise BakeryError(f"--today: expected a date YYYY-MM-DD, got {today!r}") from None
    policy = manifest.release.lifecycle
    planned = lifecycle_stage.plan(target, manifest.family_filter, policy, day, scs=manifest.scs is not None)
    return lifecycle_stage.apply(target, planned, policy, scs=manifest.scs is not None) if apply else planned


def _raise_if_failed(carried: lifecycle_stage.LifecyclePlan, target: Target, manifest: Manifest, *, released: bool) -> None:
    if carried.failed:
        first = carried.failed[0]
        done = "the release is published and verified; " if released else ""
        raise BakeryError(f"{target.name}: lifecycle: {len(carried.failed)} of {len(carried.changes)} changes failed "
                          f"({first.image['id']}: {first.error})",
                          hint=f"{done}the others were made; run `invoke lifecycle --manifest {manifest.path} --apply` to finish")


def _record(report: Report, results: list[TargetResult]) -> None:
    """One target: the report as it always was; several: the same, for the first, and one entry per target."""
    report.details["targets"] = [r.to_dict() for r in results]
    first = results[0]
    report.target, report.image, report.demoted, report.cleaned_up = first.target, first.image, first.demoted, first.cleaned_up
    report.details["release"] = first.release
    report.details["route"] = first.route


def _upload(target: Target, prepared: _Prepared, memo: DigestMemo, journal: Journal, report: Report,
            options: JobOptions, chosen: methods.Route, visibility: str) -> tuple[publish.Published, _Prepared]:
    """Upload and verify; bytes from the cache must be the bytes recorded when they were built, else the
    entry is dropped, the image built again and that one published."""
    cache = prepared.cache
    expected = prepared.expected or (_recorded_measurement(cache, prepared.stages) if prepared.image.cache_entry else None)
    try:
        published = _send(target, prepared, memo, journal, report, expected, chosen, visibility)
    except publish.ContentMismatch as mismatch:
        if not prepared.image.cache_entry:
            raise
        say(f"cache: {mismatch.one_line()}; dropping the entry and building again")
        report.details["cache_dropped"] = {"entry": prepared.image.cache_entry, "reason": mismatch.one_line()}
        cache.drop("build", prepared.stages.build)
        cache.drop("measure", prepared.stages.measure)
        prepared = _prepare(options, report, convert=True, manifest=prepared.manifest)
        published = _send(target, prepared, memo, journal, report, None, chosen, visibility)
    _remember_measurement(prepared, Measurement(size=published.size, md5=published.checksum, sha512=published.os_hash_value))
    return published, prepared


def _remember_measurement(prepared: _Prepared, measured: Measurement) -> None:
    """The measure stage's record, so that the next run of the same build reads no byte to know it."""
    if prepared.cache:
        prepared.cache.put("measure", prepared.stages.measure, {}, {"size": measured.size, "md5": measured.md5,
                                                                     "sha512": measured.sha512})


def _send(target, prepared: _Prepared, memo, journal, report: Report, expected, chosen: methods.Route,
          visibility: str) -> publish.Published:
    manifest = prepared.manifest
    # The check Glance runs on what it receives (oslo's format inspector), run first: a disk it would refuse
    # fails here, with the same reason, before the transfer rather than after it.
    check_image(prepared.image.path, label=f"the built image {prepared.image.path}", declared="raw",
                max_virtual_size=manifest.max_virtual_gib * GiB)
    with report.stage("publish"):
        published = publish.upload(target, manifest.name, prepared.image, prepared.propset, visibility=visibility,
                                   tags=manifest.tags, memo=memo, journal=journal, expected=expected, build_id=prepared.build_id,
                                   route=chosen)
    say(f"verified {published.id}: checksum {published.checksum}, {published.size:,} bytes")
    return published


def _recorded_measurement(cache: StageCache | None, stages: StageIds) -> Measurement | None:
    entry = cache.get("measure", stages.measure) if cache else None
    if entry is None:
        return None
    record = entry.record
    return Measurement(size=record["size"], md5=record["md5"], sha512=record["sha512"])


def _reuse_if_published(target: Target, prepared: _Prepared, memo: DigestMemo, report: Report) -> publish.Published | None:
    """Idempotence: the same build id with the same bytes is already verified in Glance."""
    existing = publish.find_verified(target, prepared.build_id)
    if not existing:
        return None
    image = prepared.image
    with report.stage("measure"):
        measurement = _recorded_measurement(prepared.cache, prepared.stages)
        report.details["measure"] = "cache"
        if measurement is None:
            measurement = remembered(memo, image.path)
            report.details["measure"] = "memo"
        if measurement is None:
            report.details["measure"] = "read"
            with progress(f"measure {image.path.name}", image.path.stat().st_size) as advance:
                measurement = measure_file(image.path, on_read=advance)
            memo.put(image.path, size=measurement.size, md5=measurement.md5, sha512=measurement.sha512)
    found = publish.reuse(target, existing, measurement)
    if found:
        say(f"{found.id} already holds this build ({prepared.build_id[:12]}) with the same checksum: not uploading again")
        if found.properties.get(release.WITHDRAWN_KEY):  # publishing a withdrawn release again puts it back in the running
            target.glance.images.update(found.id, remove_props=[release.WITHDRAWN_KEY])
    return found


def plan(options: JobOptions, report: Report, *, target: Target | None = None) -> Report:
    """The dry run: what build-and-publish would do, per target, changing nothing in Glance."""
    prepared = _prepare(options, report, convert=False)
    manifest = prepared.manifest
    with report.stage("connect"):
        destinations = _destinations(manifest, options, target)
    report.target = _first_target(destinations)
    image = prepared.image
    if image.path is None:  # installed from media: the disk exists only after the install
        upload = {"path": None, "installed_from": str(image.source_path)}
        upload_summary = f"the disk installed from {image.source_path.name}"
    else:
        upload = {"path": str(image.path), "size": image.path.stat().st_size, "virtual_size": image.info.virtual_size,
                  "source_format": image.source_format or image.info.format, "cache_entry": image.cache_entry}
        upload_summary = f"{image.path} ({image.path.stat().st_size:,} bytes)"
    targets = [_plan_target(d, prepared, options) for d in destinations]
    first = targets[0]
    report.demoted = first["would_demote_releases"]
    report.plan = {
        "name": manifest.name,
        "properties": prepared.propset.all(),
        "visibility": first["visibility"],
        "warnings": first["warnings"],
        "upload": upload,
        "route": first["route"],
        "existing_with_same_build_id": first["existing_with_same_build_id"],
        "would_demote": first["would_demote"],
        "targets": targets,
        "summary": {
            "would publish": manifest.name,
            **{f"to {t['name']}": _target_summary(t, upload_summary) for t in targets},
        },
    }
    _plan_guest_stages(manifest, prepared.propset.properties, report.plan)
    report.ok = True
    return report


def _plan_guest_stages(manifest: Manifest, properties: dict[str, str], planned: dict) -> None:
    """What would run inside a guest: the provisioning steps, and the machine the canary would boot."""
    if manifest.provision:
        steps = [f"{step.name} ({step.kind})" for step in manifest.provision.steps]
        planned["provision"] = manifest.provision.to_dict()
        planned["summary"]["would provision"] = f"{', '.join(steps)}; at most {manifest.provision.max_reboots} reboot(s)"
    if manifest.canary:
        hardware = canary.plan(manifest, properties)
        planned["canary"] = {**hardware.to_dict(), "domain_xml": hardware.domain_xml}
        planned["summary"]["would boot first (canary)"] = hardware.summary + (f" ({hardware.not_applied})" if hardware.not_applied else "")


def _plan_target(destination: _Destination, prepared: _Prepared, options: JobOptions) -> dict:
    target, manifest = destination.target, prepared.manifest
    if target is None:
        return {"name": destination.name, "error": destination.error, "visibility": None, "warnings": [], "route": None,
                "existing_with_same_build_id": [], "would_demote": [], "would_demote_releases": []}
    visibility = destination.visibility or manifest.visibility
    existing = publish.find_verified(target, prepared.build_id)
    previous = release.to_supersede(target, manifest, new_id=None, allow_older=options.allow_older)
    chosen = methods.route(target, destination.spec.upload or manifest.upload, probe=False)  # a plan writes to no cloud
    warnings = _permission_warnings(target, visibility)
    for warning in warnings:
        say(f"warning: {target.name}: {warning}")
    return {"name": target.name, "visibility": visibility, "warnings": warnings, "route": chosen.to_dict(),
            "existing_with_same_build_id": [e["id"] for e in existing], "would_demote": [p.id for p in previous],
            "would_demote_releases": [p.to_dict() for p in previous]}


def _target_summary(planned: dict, upload_summary: str) -> str:
    if planned.get("error"):
        return f"cannot be reached: {planned['error']}"
    route = planned["route"]
    stores = "all stores" if route["all_stores"] else (", ".join(route["stores"]) or "the default store")
    how = f"{route['method']} ({route['stage_format']}) to {stores}: {route['why']}"
    upload = "maybe nothing: an image with this build id exists" if planned["existing_with_same_build_id"] else upload_summary
    demote = ", ".join(planned["would_demote"]) or "nothing"
    warned = " (see warnings)" if planned["warnings"] else ""
    return f"{planned['visibility']}{warned}; {how}; upload {upload}; would demote {demote}"


def _permission_warnings(target: Target, visibility: str) -> list[str]:
    """What Glance's default policy will refuse this account (build-and-publish checks it for real, before
    uploading; plan only knows the account's roles)."""
    if visibility == "public" and "admin" not in target.roles:
        return [f"visibility public needs Glance's publicize_image permission (admin by default); this account has roles "
                f"{', '.join(target.roles) or 'none'}: build-and-publish will stop before uploading unless the cloud allows it "
                f"(or set image.visibility to community or shared)"]
    return []


def lint_manifest(options: JobOptions, report: Report, *, enforce: bool = True) -> Report:
    """Render the property set of a manifest and report the findings, without touching Glance.

    The source image is not needed: when it is not at hand, the checks that need its facts
    (virtual size) are skipped and the report says so. With enforce, error findings raise LintFailed.
    """
    manifest = _load(options, report)
    source = manifest.source
    if source and not source.is_url and Path(source.location).is_file():
        image = build_stage.preview(manifest, Path(source.location))
    else:
        image = BuiltImage(None, None, None, origin_sha256(manifest), temporary=False)
        missing = f"source {source.location} is not at hand" if source else "the disk is installed from media"
        report.details["skipped"] = f"{missing}: image facts (virtual size) not checked"
    stages = stage_ids(manifest)
    build_id = release_build_id(manifest, template_sha256=properties.template_sha256(), stages=stages)
    propset = properties.render(manifest, image, build_id=build_id, enforce=False, provenance={"build_stage": stages.build})
    report.lint = [f.to_dict() for f in propset.findings]
    report.details["properties"] = propset.all()
    if enforce and lint.errors(list(propset.findings)):
        raise properties.lint_failed(manifest, propset.findings)
    report.ok = True
    return report


def _load(options: JobOptions, report: Report) -> Manifest:
    manifest = load_manifest(options.manifest, release_date=options.release_date, variables=parse_variables(list(options.variables)))
    properties.check_suppressions(manifest)
    _summarise(report, manifest)
    return manifest


def _summarise(report: Report, manifest: Manifest) -> None:
    report.manifest = {"path": str(manifest.path), "sha256": manifest.sha256, "release_date": manifest.release_date, "name": manifest.name}


def explain_manifest(options: JobOptions, report: Report, *, nova: str) -> explain_stage.Explanation:
    """The libvirt XML Nova would generate for a manifest's property set (even one that fails lint)."""
    lint_manifest(options, report, enforce=False)  # a bad set is exactly what explain must show
    return explain_stage.explain_properties(report.details["properties"], report, nova=nova)


def inspect_reference(reference: str, report: Report, *, cloud: str | None = None, workdir: Path) -> ImageFacts:
    """`invoke inspect`: a local image file, or a Glance image id (downloaded to a temporary file first)."""
    path = Path(reference)
    facts = inspect_image(path, workdir=workdir) if path.exists() else _inspect_glance_image(reference, cloud, workdir)
    report.details["facts"] = facts.to_dict()
    report.ok = True
    return facts


def _inspect_glance_image(image_id: str, cloud: str | None, workdir: Path) -> ImageFacts:
    target = connect(cloud)
    image = fetch_image(target, image_id)
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(prefix=f"inspect-{image_id}-", suffix=".img", dir=workdir) as local:
        with progress(f"download {image_id}", int(image.get("size") or 0)) as advance:
            download(target, image_id, local, on_read=advance)
        local.flush()
        return inspect_image(Path(local.name), workdir=workdir)


def _lint_catalog(entries: list, options: gitlab.Options) -> None:
    """The lint the pipeline's lint job runs, run now: a catalog that would fail it is not generated. One line per
    failing manifest, then the error."""
    failing = []
    for entry in entries:
        try:
            lint_manifest(JobOptions(entry.path, variables=options.variables), Report("lint"))
        except BakeryError as exc:
            failing.append(entry.path.name)
            say(f"{entry.path}: {exc.one_line()}")
    if failing:
        raise BakeryError(f"{len(failing)} of {len(entries)} manifests fail lint ({', '.join(failing)}): the pipeline's lint job "
                          "would fail; nothing was generated")


def generate_ci(report: Report, *, engine: str, catalog: Path, clouds: tuple[str, ...], options: gitlab.Options,
                out: Path | None) -> str:
    """`invoke ci`: the catalog's pipeline for a CI engine, validated manifests only."""
    if engine != "gitlab":
        raise BakeryError(f"--engine {engine}: unknown; expected gitlab")
    entries, skipped = ci_catalog.read(catalog, base=out.parent if out else Path.cwd(), clouds=clouds,
                                       variables=parse_variables(list(options.variables)))
    for entry in skipped:
        say(f"{entry.path}: skipped: {entry.reason}")
    _lint_catalog(entries, options)
    document = gitlab.pipeline(entries, options)
    text = gitlab.render(document)
    if out:
        write_atomically(out, text)
    report.details["ci"] = {"engine": engine, "out": str(out) if out else None, "text": text,
                            "skipped": [{"manifest": str(s.path), "reason": s.reason} for s in skipped],
                            "jobs": [name for name in document if ":" in name or name == "lint"],
                            "families": sorted({"/".join(e.family) for e in entries})}
    report.ok = True
    return text
