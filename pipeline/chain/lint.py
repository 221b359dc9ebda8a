"""`invoke lint` and `invoke explain` of a manifest (its property set, without Glance), and `invoke lint --image`."""

from __future__ import annotations

from pathlib import Path

from pipeline.build import stage as build_stage
from pipeline.build.image import BuiltImage, origin_sha256
from pipeline.chain.inspecting import inspect_glance_image
from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import load
from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.properties import explain as explain_stage
from pipeline.properties import image_lint, lint
from pipeline.properties import render as properties
from pipeline.repro.stages import build_id as release_build_id
from pipeline.repro.stages import stage_ids


def lint_manifest(options: JobOptions, report: Report, *, enforce: bool = True) -> Report:
    """Render the property set of a manifest and report the findings, without touching Glance.

    The source image is not needed: when it is not at hand, the checks that need its facts
    (virtual size) are skipped and the report says so. With enforce, error findings raise LintFailed.
    """
    manifest = load(options, report)
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


def explain_manifest(options: JobOptions, report: Report, *, nova: str) -> explain_stage.Explanation:
    """The libvirt XML Nova would generate for a manifest's property set (even one that fails lint)."""
    lint_manifest(options, report, enforce=False)  # a bad set is exactly what explain must show
    try:
        return explain_stage.explain_properties(report.details["properties"], report, nova=nova)
    except explain_stage.NovaRefuses as refused:  # ... unless Nova would build no domain from it at all
        raise explain_stage.NovaRefuses(f"{options.manifest}: {refused}") from None


def lint_glance(target: Target, image_id: str, report: Report, *, inspect: bool, workdir: Path) -> Report:
    """`invoke lint --image`: a Glance image's properties, judged with the facts of its own bytes (downloaded
    and inspected, as `invoke inspect` does) unless `inspect` is off: a property set that asks for a virtio
    disk is only right when the image's registry has the boot driver."""
    def image_facts(image: dict) -> dict | None:
        try:
            return inspect_glance_image(target, image, workdir).lint_facts()
        except BakeryError as exc:  # not a Windows disk the bakery can read: the properties are still judged
            report.details["skipped"] = f"image {image['id']} not read as a Windows image, so the rules that need its facts are skipped ({exc})"
            say(report.details["skipped"])
            return None

    return image_lint.lint_image(target, image_id, report, image_facts=image_facts if inspect else None)
