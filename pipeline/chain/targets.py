"""Publishing a prepared release to every target: the first alone, the others concurrently; upload, verify, release, lifecycle."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import Prepared, prepare, recorded_measurement, remember_measurement
from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.progress import progress, say
from pipeline.common.report import Report
from pipeline.diskimage.info import GiB
from pipeline.diskimage.safety import check_image
from pipeline.glance.connect import Target, connect
from pipeline.glance.errors import describe as describe_client_error
from pipeline.manifest import Manifest, TargetSpec, parse_release_date
from pipeline.publish import lifecycle as lifecycle_stage
from pipeline.publish import methods, release
from pipeline.publish import upload as publish
from pipeline.publish.journal import Journal
from pipeline.publish.measure import Measurement, measure_file, remembered


@dataclass(frozen=True)
class Destination:
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


def publish_everywhere(prepared: list, options: JobOptions, report: Report, target: Target | None) -> Report:
    """Every target of the run: the first alone, the others concurrently (build_and_publish says why)."""
    with report.stage("connect"):
        destinations = connect_destinations(prepared[0].manifest, options, target)
    report.target = first_target(destinations)
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


def first_target(destinations: list[Destination]) -> dict:
    first = destinations[0]
    return first.target.to_dict() if first.target else {"name": first.name, "error": first.error}


def connect_destinations(manifest: Manifest, options: JobOptions, target: Target | None) -> list[Destination]:
    if target is not None:
        return [Destination(target, TargetSpec(target.name))]
    named = {spec.cloud: spec for spec in manifest.targets}
    specs = [named.get(name, TargetSpec(name)) for name in options.cloud_names] or list(manifest.targets)
    if len(specs) <= 1:  # one target: a connection failure is the run's failure, as it always was
        spec = specs[0] if specs else TargetSpec("default")
        return [Destination(connect(spec.cloud if specs else None), spec)]
    destinations = []
    for spec in specs:  # several: a cloud that cannot be reached is that target's failure, not the others'
        try:
            destinations.append(Destination(connect(spec.cloud), spec))
        except BakeryError as exc:
            destinations.append(Destination(None, spec, exc.one_line()))
    return destinations


def _publish_to(destination: Destination, prepared: list, options: JobOptions, report: Report, *, alone: bool) -> TargetResult:
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


def _publish(destination: Destination, prepared: list, options: JobOptions, report: Report, result: TargetResult) -> None:
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
            carried = carry_out_lifecycle(target, manifest, today=None, apply=True)
        result.lifecycle = carried.to_dict()
        raise_if_failed(carried, target, manifest, released=True)


def carry_out_lifecycle(target: Target, manifest: Manifest, *, today: str | None, apply: bool,
                        reach: lifecycle_stage.Reach = lifecycle_stage.Reach()) -> lifecycle_stage.LifecyclePlan:
    try:
        day = dt.date.fromisoformat(parse_release_date(today))
    except BakeryError:
        raise BakeryError(f"--today: expected a date YYYY-MM-DD, got {today!r}") from None
    policy = manifest.release.lifecycle
    planned = lifecycle_stage.plan(target, manifest.family_filter, policy, day, scs=manifest.scs is not None, reach=reach)
    return lifecycle_stage.apply(target, planned, policy, scs=manifest.scs is not None, owner=reach.owner) if apply else planned


def raise_if_failed(carried: lifecycle_stage.LifecyclePlan, target: Target, manifest: Manifest, *, released: bool) -> None:
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


def _upload(target: Target, prepared: Prepared, memo: DigestMemo, journal: Journal, report: Report,
            options: JobOptions, chosen: methods.Route, visibility: str) -> tuple[publish.Published, Prepared]:
    """Upload and verify; bytes from the cache must be the bytes recorded when they were built, else the
    entry is dropped, the image built again and that one published."""
    cache = prepared.cache
    expected = prepared.expected or (recorded_measurement(cache, prepared.stages) if prepared.image.cache_entry else None)
    try:
        published = _send(target, prepared, memo, journal, report, expected, chosen, visibility)
    except publish.ContentMismatch as mismatch:
        if not prepared.image.cache_entry:
            raise
        say(f"cache: {mismatch.one_line()}; dropping the entry and building again")
        report.details["cache_dropped"] = {"entry": prepared.image.cache_entry, "reason": mismatch.one_line()}
        cache.drop("build", prepared.stages.build)
        cache.drop("measure", prepared.stages.measure)
        prepared = prepare(options, report, convert=True, manifest=prepared.manifest)
        published = _send(target, prepared, memo, journal, report, None, chosen, visibility)
    remember_measurement(prepared, Measurement(size=published.size, md5=published.checksum, sha512=published.os_hash_value))
    return published, prepared


def _send(target, prepared: Prepared, memo, journal, report: Report, expected, chosen: methods.Route,
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


def _reuse_if_published(target: Target, prepared: Prepared, memo: DigestMemo, report: Report) -> publish.Published | None:
    """Idempotence: the same build id with the same bytes is already verified in Glance."""
    existing = publish.find_verified(target, prepared.build_id)
    if not existing:
        return None
    image = prepared.image
    with report.stage("measure"):
        measurement = recorded_measurement(prepared.cache, prepared.stages)
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
