"""Lint what is already in Glance: the property set of one image (`invoke lint --image`, and audit per image)."""

from __future__ import annotations

from pipeline.common.errors import LintFailed
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.glance.images import custom_properties, fetch_image
from pipeline.properties import lint


def lint_glance_image(image: dict) -> list[lint.Finding]:
    return lint.lint(custom_properties(image), facts={"virtual_size": image.get("virtual_size")})


def lint_image(target: Target, image_id: str, report: Report) -> Report:
    image = fetch_image(target, image_id)
    report.target = target.to_dict()
    findings = lint_glance_image(image)
    report.lint = [f.to_dict() for f in findings]
    report.details["image"] = {"id": image["id"], "name": image.get("name")}
    if lint.errors(findings):
        raise LintFailed(findings)
    report.ok = True
    return report


def looks_windows(image: dict) -> bool:
    text = " ".join(str(image.get(k) or "") for k in ("os_distro", "os_type", "name")).lower()
    return "win" in text
