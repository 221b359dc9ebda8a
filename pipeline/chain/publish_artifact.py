"""`invoke publish --artifact`: the publish half, for the bytes a bake job made; nothing in the record is trusted that can be computed again."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from pipeline.build.image import BuiltImage
from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import Prepared, summarise
from pipeline.chain.targets import publish_everywhere
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from pipeline.diskimage.info import image_info
from pipeline.glance.connect import Target
from pipeline.manifest import Manifest
from pipeline.properties import lint
from pipeline.properties import render as properties
from pipeline.repro import artifact
from pipeline.repro.stages import build_id as release_build_id
from pipeline.sbom.document import PROPERTY as SBOM_PROPERTY


def publish_artifact(options: JobOptions, report: Report, *, artifact_dir: Path, target: Target | None = None) -> Report:
    """`invoke publish --artifact DIR`: the publish half of build-and-publish, for the bytes a bake job made.
    The upload measures them in its single pass against the record: other bytes are never released."""
    baked = artifact.load(artifact_dir)
    manifest = baked.manifest()
    properties.check_suppressions(manifest)
    summarise(report, manifest)
    report.build_id = baked.build_id
    report.details["artifact"] = baked.to_dict()
    image = BuiltImage(baked.image_path, image_info(baked.image_path, fmt="raw"), manifest.path, baked.source_sha256,
                       temporary=False, facts=baked.facts, baked=baked.bake)
    propset = _rendered_again(baked, manifest, image)
    report.lint = [f.to_dict() for f in propset.findings]
    prepared = Prepared(manifest, image, propset, baked.build_id, baked.stages, None, expected=baked.measurement)
    return publish_everywhere([prepared], options, report, target)


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
    sbom = baked.sbom()  # its bytes are the ones the record (so the artifact's id) names, and valid CycloneDX
    if sbom:
        expected[SBOM_PROPERTY] = sbom.sha256
    for section, want in (("properties", expected), ("core", propset.core)):
        got = baked.record[section]
        for key in sorted(set(want) | set(got)):
            if got.get(key) != want.get(key):
                raise BakeryError(f"{where}: {section}.{key} is {_shown(got.get(key))}, but its manifest and facts render "
                                  f"{_shown(want.get(key))}: the record was edited after the bake", hint="bake again; an artifact is never edited")
    return dataclasses.replace(propset, properties=expected)


def _shown(value) -> str:
    return "absent" if value is None else repr(value)
