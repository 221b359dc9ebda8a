"""Lint what is already in Glance: one image, or every Windows-looking image and the health of its family."""

from __future__ import annotations

from collections import defaultdict

from pipeline.common.errors import LintFailed
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.glance.images import custom_properties, fetch_image
from pipeline.manifest import DEFAULT_FAMILY_KEYS
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


def audit(target: Target, report: Report) -> Report:
    """Findings per Windows-looking image, and family health: one recommended image per family."""
    images: dict[str, dict] = {}
    for filters in ({}, {"os_hidden": True}):
        for image in target.glance.images.list(filters=filters):
            if looks_windows(image):
                images[image["id"]] = dict(image)
    entries, families = [], defaultdict(list)
    for image in sorted(images.values(), key=lambda i: (i.get("name") or "", i["id"])):
        findings = lint_glance_image(image)
        entries.append({"id": image["id"], "name": image.get("name"), "owner": image.get("owner"),
                        "recommended": image.get("recommended"), "hidden": bool(image.get("os_hidden")),
                        "findings": [f.to_dict() for f in findings]})
        families[(image.get("owner"), *(image.get(k) or "?" for k in DEFAULT_FAMILY_KEYS))].append(image)
    report.target = target.to_dict()
    report.details["images"] = entries
    report.details["families"] = [_family_health(key, members) for key, members in sorted(families.items(), key=str)]
    report.ok = True
    return report


def _family_health(key: tuple, members: list[dict]) -> dict:
    recommended = [m for m in members if m.get("recommended") == "true"]
    problems = []
    if not recommended:
        problems.append("no recommended image")
    if len(recommended) > 1:
        problems.append(f"{len(recommended)} recommended images: {', '.join(m['id'] for m in recommended)}")
    for m in members:
        if m.get("os_hidden") and m.get("recommended") == "true":
            problems.append(f"hidden image {m['id']} is still recommended")
    never_demoted = [m["id"] for m in members if "recommended" not in m]
    if never_demoted:
        problems.append(f"images without a recommended property (never demoted): {', '.join(never_demoted)}")
    return {"owner": key[0], "family": "/".join(key[1:]), "images": len(members), "recommended": [m["id"] for m in recommended],
            "problems": problems}
