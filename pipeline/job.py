"""The chain: manifest -> build -> properties (+lint) -> publish (measure in the same pass) -> release.

Everything that can be checked without touching Glance is checked before connecting to it, so a bad
manifest never reaches the server; and the previous release is only demoted once the new one is verified.
"""

from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path

from pipeline import build as build_stage
from pipeline import install as install_stage
from pipeline import lint, properties, publish, release
from pipeline.cloud import Target, connect
from pipeline.errors import LintFailed
from pipeline.manifest import Manifest, load_manifest, parse_variables
from pipeline.measure import DigestMemo, measure_file
from pipeline.paths import state_dir
from pipeline.progress import progress, say
from pipeline.report import Report


@dataclass(frozen=True)
class JobOptions:
    manifest: Path
    cloud: str | None = None
    release_date: str | None = None
    variables: tuple[str, ...] = ()
    allow_older: bool = False


@dataclass
class _Prepared:
    manifest: Manifest
    image: build_stage.BuiltImage
    propset: properties.PropertySet
    build_id: str


def _prepare(options: JobOptions, report: Report, *, convert: bool) -> _Prepared:
    """Everything up to (not including) the first call to Glance."""
    state = state_dir()
    memo = DigestMemo(state / "memo")
    with report.stage("manifest"):
        manifest = _load(options, report)
    downloads = state / "downloads"
    with report.stage("source"):
        if manifest.install:
            source_path = build_stage.fetch_pinned(manifest.install.media, manifest, downloads, memo)
            install_drivers = build_stage.fetch_pinned(manifest.install.virtio_win, manifest, downloads, memo)
        else:
            source_path = build_stage.locate_source(manifest, downloads, memo)
        virtio_win = build_stage.fetch_pinned(manifest.bake.virtio_win, manifest, downloads, memo) if manifest.bake else None
    build_id = build_stage.build_id(manifest, template_sha256=properties.template_sha256())
    report.build_id = build_id
    workdir = state / "work" / build_id
    if manifest.install and convert:
        with report.stage("install"):
            installed = install_stage.install(manifest, source_path, install_drivers, state / "work" / f"{build_id}-install", build_id=build_id,
                                              record=lambda result: report.details.__setitem__("install", result.to_dict()))
        source_path = installed.disk
    with report.stage("build"):
        if convert:
            try:
                image = build_stage.build(manifest, source_path, workdir, virtio_win=virtio_win)
                if manifest.install:
                    image = dataclasses.replace(image, installed_virtio_win=installed.virtio_win_version)
            finally:
                if manifest.install:  # the installed disk: the built image is what counts now
                    shutil.rmtree(source_path.parent, ignore_errors=True)
        elif manifest.install:
            image = build_stage.BuiltImage(None, None, source_path, build_stage.origin_sha256(manifest), temporary=False)
        else:
            image = build_stage.preview(manifest, source_path)
    report.built = image.to_dict()
    try:
        with report.stage("properties"):
            propset = properties.render(manifest, image, build_id=build_id)
    except BaseException:
        build_stage.discard(image)
        raise
    report.lint = [f.to_dict() for f in propset.findings]
    return _Prepared(manifest, image, propset, build_id)


def build_and_publish(options: JobOptions, report: Report, *, target: Target | None = None) -> Report:
    prepared = _prepare(options, report, convert=True)
    manifest, image, propset = prepared.manifest, prepared.image, prepared.propset
    try:
        with report.stage("connect"):
            target = target or connect(options.cloud)
        report.target = target.to_dict()
        memo = DigestMemo(state_dir() / "memo")
        journal = publish.Journal(state_dir() / "journal", target)
        report.cleaned_up = journal.sweep()

        published = _reuse_if_published(target, prepared, memo, report)
        release.to_supersede(target, manifest, new_id=published.id if published else None, allow_older=options.allow_older)
        if published is None:
            with report.stage("publish"):
                published = publish.upload(
                    target, manifest.name, image, propset,
                    visibility=manifest.visibility, tags=manifest.tags, memo=memo, journal=journal,
                )
            say(f"verified {published.id}: checksum {published.checksum}, {published.size:,} bytes")
        with report.stage("release"):
            previous = release.to_supersede(target, manifest, new_id=published.id, allow_older=True)
            demoted = release.demote(target, published.id, previous, policy=manifest.release.previous)
        report.demoted = [d.to_dict() for d in demoted]
        final = target.glance.images.get(published.id)
        report.image = {**publish.published_from(final, uploaded=published.uploaded).to_dict()}
        report.ok = True
        return report
    finally:
        build_stage.discard(image)


def _reuse_if_published(target: Target, prepared: _Prepared, memo: DigestMemo, report: Report) -> publish.Published | None:
    """Idempotence: the same build id with the same bytes is already verified in Glance."""
    existing = publish.find_verified(target, prepared.build_id)
    if not existing:
        return None
    image = prepared.image
    with report.stage("measure"):
        measurement = memo.measurement(image.path)
        if measurement is None:
            with progress(f"measure {image.path.name}", image.path.stat().st_size) as advance:
                measurement = measure_file(image.path, on_read=advance)
            memo.put(image.path, size=measurement.size, md5=measurement.md5, sha512=measurement.sha512)
    found = publish.reuse(target, existing, measurement)
    if found:
        say(f"{found.id} already holds this build ({prepared.build_id[:12]}) with the same checksum: not uploading again")
        if found.properties.get("recommended") != "true":
            target.glance.images.update(found.id, recommended="true", remove_props=["superseded_by"])
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
                  "source_format": image.info.format}
        upload_summary = f"{image.path} ({image.path.stat().st_size:,} bytes)"
    report.plan = {
        "name": manifest.name,
        "properties": prepared.propset.all(),
        "visibility": manifest.visibility,
        "upload": upload,
        "existing_with_same_build_id": [e["id"] for e in existing],
        "would_demote": [p.id for p in previous],
        "summary": {
            "would publish": manifest.name,
            "upload": "maybe not: an image with this build id exists (reused if its checksum matches)" if existing else upload_summary,
            "would demote": ", ".join(f"{p.name} ({p.id})" for p in previous) or "none",
        },
    }
    report.ok = True
    return report


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
        image = build_stage.BuiltImage(None, None, None, build_stage.origin_sha256(manifest), temporary=False)
        missing = f"source {source.location} is not at hand" if source else "the disk is installed from media"
        report.details["skipped"] = f"{missing}: image facts (virtual size) not checked"
    build_id = build_stage.build_id(manifest, template_sha256=properties.template_sha256())
    propset = properties.render(manifest, image, build_id=build_id, enforce=False)
    report.lint = [f.to_dict() for f in propset.findings]
    report.details["properties"] = propset.all()
    if enforce and lint.errors(list(propset.findings)):
        raise LintFailed(propset.findings)
    report.ok = True
    return report


def _load(options: JobOptions, report: Report) -> Manifest:
    manifest = load_manifest(options.manifest, release_date=options.release_date, variables=parse_variables(list(options.variables)))
    report.manifest = {"path": str(manifest.path), "sha256": manifest.sha256, "release_date": manifest.release_date, "name": manifest.name}
    return manifest
