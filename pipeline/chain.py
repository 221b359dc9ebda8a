"""The chain: the one place that orders the stages.

manifest -> (lock check) -> build (install, bake or convert; through the stage cache) -> properties (+ lint)
-> publish (measured in the same pass as the upload, verified) -> release (demote the previous one).

Everything that can be checked without touching Glance is checked before connecting to it, so a bad
manifest never reaches the server; and the previous release is only demoted once the new one is verified.
The partial runs of the chain live here too: plan (the dry run), lint and explain of a manifest, lock,
and inspect (of a file, or of a Glance image fetched first).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.build import stage as build_stage
from pipeline.build.image import BuiltImage, discard, origin_sha256
from pipeline.common.digests import DigestMemo
from pipeline.common.errors import BakeryError, LintFailed
from pipeline.common.paths import state_dir
from pipeline.common.progress import progress, say
from pipeline.common.report import Report
from pipeline.diskimage.info import GiB
from pipeline.diskimage.safety import check_image
from pipeline.glance.connect import Target, connect
from pipeline.glance.images import download, fetch_image
from pipeline.manifest import Manifest, load_manifest, parse_variables
from pipeline.properties import explain as explain_stage
from pipeline.properties import lint
from pipeline.properties import render as properties
from pipeline.publish import release
from pipeline.publish import upload as publish
from pipeline.publish.journal import Journal
from pipeline.publish.measure import Measurement, measure_file, remembered
from pipeline.repro import lock as lockfile
from pipeline.repro import runner
from pipeline.repro.cache import StageCache
from pipeline.repro.lock import git_commit
from pipeline.repro.stages import StageIds, stage_ids
from pipeline.repro.stages import build_id as release_build_id
from pipeline.windows.inspection import ImageFacts, inspect_image


@dataclass(frozen=True)
class JobOptions:
    manifest: Path
    cloud: str | None = None
    release_date: str | None = None
    variables: tuple[str, ...] = ()
    allow_older: bool = False
    use_cache: bool = True
    lock: Path | None = None  # default: the manifest's .lock file when there is one


@dataclass
class _Prepared:
    manifest: Manifest
    image: BuiltImage
    propset: properties.PropertySet
    build_id: str
    stages: StageIds
    cache: StageCache | None


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
        raise LintFailed(propset.findings)


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
    prepared = _prepare(options, report, convert=True)
    manifest = prepared.manifest
    try:
        with report.stage("connect"):
            target = target or connect(options.cloud)
        report.target = target.to_dict()
        memo = DigestMemo(state_dir() / "memo")
        journal = Journal(state_dir() / "journal", target)
        report.cleaned_up = journal.sweep()
        report.details["journal_unreadable"] = journal.unreadable

        published = _reuse_if_published(target, prepared, memo, report)
        release.to_supersede(target, manifest, new_id=published.id if published else None, allow_older=options.allow_older)
        if published is None:
            published, prepared = _upload(target, prepared, memo, journal, report, options)
        with report.stage("release"):
            settled = release.release(target, manifest, published.id, allow_older=options.allow_older)
        report.demoted = [d.to_dict() for d in settled.demoted]
        report.details["release"] = settled.to_dict()
        final = target.glance.images.get(published.id)
        report.image = {**publish.published_from(final, uploaded=published.uploaded).to_dict()}
        report.ok = True
        return report
    finally:
        discard(prepared.image)


def _upload(target: Target, prepared: _Prepared, memo: DigestMemo, journal: Journal, report: Report,
            options: JobOptions) -> tuple[publish.Published, _Prepared]:
    """Upload and verify; bytes from the cache must be the bytes recorded when they were built, else the
    entry is dropped, the image built again and that one published."""
    cache = prepared.cache
    expected = _recorded_measurement(cache, prepared.stages) if prepared.image.cache_entry else None
    try:
        published = _send(target, prepared, memo, journal, report, expected)
    except publish.ContentMismatch as mismatch:
        if not prepared.image.cache_entry:
            raise
        say(f"cache: {mismatch.one_line()}; dropping the entry and building again")
        report.details["cache_dropped"] = {"entry": prepared.image.cache_entry, "reason": mismatch.one_line()}
        cache.drop("build", prepared.stages.build)
        cache.drop("measure", prepared.stages.measure)
        prepared = _prepare(options, report, convert=True, manifest=prepared.manifest)
        published = _send(target, prepared, memo, journal, report, None)
    if cache:
        cache.put("measure", prepared.stages.measure, {}, {"size": published.size, "md5": published.checksum,
                                                            "sha512": published.os_hash_value})
    return published, prepared


def _send(target, prepared: _Prepared, memo, journal, report: Report, expected) -> publish.Published:
    manifest = prepared.manifest
    # The check Glance runs on what it receives (oslo's format inspector), run first: a disk it would refuse
    # fails here, with the same reason, before the transfer rather than after it.
    check_image(prepared.image.path, label=f"the built image {prepared.image.path}", declared="raw",
                max_virtual_size=manifest.max_virtual_gib * GiB)
    with report.stage("publish"):
        published = publish.upload(target, manifest.name, prepared.image, prepared.propset, visibility=manifest.visibility,
                                   tags=manifest.tags, memo=memo, journal=journal, expected=expected, build_id=prepared.build_id)
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
    """The dry run: what build-and-publish would do, changing nothing in Glance."""
    prepared = _prepare(options, report, convert=False)
    manifest = prepared.manifest
    with report.stage("connect"):
        target = target or connect(options.cloud)
    report.target = target.to_dict()
    existing = publish.find_verified(target, prepared.build_id)
    previous = release.to_supersede(target, manifest, new_id=None, allow_older=options.allow_older)
    report.demoted = [p.to_dict() for p in previous]
    image = prepared.image
    if image.path is None:  # installed from media: the disk exists only after the install
        upload = {"path": None, "installed_from": str(image.source_path)}
        upload_summary = f"the disk installed from {image.source_path.name}"
    else:
        upload = {"path": str(image.path), "size": image.path.stat().st_size, "virtual_size": image.info.virtual_size,
                  "source_format": image.source_format or image.info.format, "cache_entry": image.cache_entry}
        upload_summary = f"{image.path} ({image.path.stat().st_size:,} bytes)"
    warnings = _permission_warnings(target, manifest)
    for warning in warnings:
        say(f"warning: {warning}")
    report.plan = {
        "name": manifest.name,
        "properties": prepared.propset.all(),
        "visibility": manifest.visibility,
        "warnings": warnings,
        "upload": upload,
        "existing_with_same_build_id": [e["id"] for e in existing],
        "would_demote": [p.id for p in previous],
        "summary": {
            "would publish": manifest.name,
            "visibility": manifest.visibility + (" (see warnings)" if warnings else ""),
            "upload": "maybe not: an image with this build id exists (reused if its checksum matches)" if existing else upload_summary,
            "would demote": ", ".join(f"{p.name} ({p.id})" for p in previous) or "none",
        },
    }
    report.ok = True
    return report


def _permission_warnings(target: Target, manifest: Manifest) -> list[str]:
    """What Glance's default policy will refuse this account (build-and-publish checks it for real, before
    uploading; plan only knows the account's roles)."""
    if manifest.visibility == "public" and "admin" not in target.roles:
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
        raise LintFailed(propset.findings)
    report.ok = True
    return report


def _load(options: JobOptions, report: Report) -> Manifest:
    manifest = load_manifest(options.manifest, release_date=options.release_date, variables=parse_variables(list(options.variables)))
    properties.check_suppressions(manifest)
    report.manifest = {"path": str(manifest.path), "sha256": manifest.sha256, "release_date": manifest.release_date, "name": manifest.name}
    return manifest


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
