"""Lint what is already in Glance: the property set of one image (`invoke lint --image`, and audit per image)."""

from __future__ import annotations

from pipeline.common.errors import LintFailed
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.glance.images import custom_properties, fetch_image
from pipeline.properties import lint


def lint_glance_image(image: dict, image_facts: dict | None = None) -> list[lint.Finding]:
    """`image_facts`: what inspection read from the image's bytes (ImageFacts.lint_facts()); without them
    only the properties and Glance's virtual size are checked."""
    return lint.lint(custom_properties(image), facts={"virtual_size": image.get("virtual_size"), **(image_facts or {})})


def lint_image(target: Target, image_id: str, report: Report, *, image_facts=None) -> Report:
    """`image_facts(image)`: a callable reading the image's own facts (the chain downloads and inspects it),
    or None to check the properties only."""
    image = fetch_image(target, image_id)
    report.target = target.to_dict()
    facts = image_facts(image) if image_facts else None
    findings = lint_glance_image(image, facts)
    report.lint = [f.to_dict() for f in findings]
    report.details["image"] = {"id": image["id"], "name": image.get("name")}
    report.details["inspected"] = facts is not None
    if lint.errors(findings):
        raise LintFailed(findings, where=f"image {image['id']}", outcome="the image was left as it is")
    report.ok = True
    return report


def looks_windows(image: dict) -> bool:
    text = " ".join(str(image.get(k) or "") for k in ("os_distro", "os_type", "name")).lower()
    return "win" in text
