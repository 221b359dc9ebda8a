"""What is published: lint findings per Windows-looking image, the health of each family, unfinished uploads.

A family is healthy when exactly one verified member is recommended, it is the newest by release date,
and every other member is superseded by it (release.py's one right state). An image still marked as
uploading is reported whatever its lease says: live (another run is at work) or abandoned. With `repair`,
the project's own families are converged and its abandoned uploads deleted; other projects' images are
only reported.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY, list_including_hidden
from pipeline.manifest import DEFAULT_FAMILY_KEYS
from pipeline.properties import scs
from pipeline.properties.image_lint import lint_glance_image, looks_windows
from pipeline.publish import release
from pipeline.publish.lease import lease_state

STANDARDS = ("scs-0102",)


def audit(target: Target, report: Report, *, repair: bool = False, standard: str | None = None) -> Report:
    if standard is not None and standard not in STANDARDS:
        raise BakeryError(f"--standard {standard}: unknown; expected one of {', '.join(STANDARDS)}")
    everything = _all_images(target)  # one listing serves the lint, the families and the standard
    images = _windows(everything)
    report.target = target.to_dict()
    report.details["images"] = [_image_entry(image) for image in sorted(images.values(), key=lambda i: (i.get("name") or "", i["id"]))]
    report.details["uploading"] = [_upload_entry(image) for image in images.values() if image.get(STATE_KEY) is not None]
    if repair:
        report.details["repaired"] = _repair(target, images)
        everything = _all_images(target)
        images = _windows(everything)
    families = defaultdict(list)
    for image in images.values():
        if image.get(STATE_KEY) is None:
            families[(image.get("owner"), *(image.get(k) or "?" for k in DEFAULT_FAMILY_KEYS))].append(image)
    report.details["families"] = [_family_health(key, members) for key, members in sorted(families.items(), key=str)]
    if target.local_server is not None:
        report.details["stray_files"] = _stray_files(target.local_server, repair=repair)
    report.ok = True
    if standard:
        _conformance(everything, report)
    return report


def _stray_files(server, *, repair: bool) -> dict:
    """Bytes in the local Glance's stores that no image accounts for (killed uploads); removed with --repair."""
    strays = server.stray_files()
    sizes = [p.stat().st_size for p in strays if p.exists()]
    if repair:
        server.remove_orphan_files(running=True)
    return {"files": [p.name for p in strays], "bytes": sum(sizes), "removed": repair}


def _conformance(everything: dict[str, dict], report: Report) -> None:
    """SCS-0102 over the images the standard's checker judges (public and community ones, as offered)."""
    images = [i for i in everything.values() if i.get(STATE_KEY) is None and scs.in_scope(i)]
    findings = scs.check_catalog(images, dt.datetime.now(dt.timezone.utc))
    failing = sorted({f.image_id for f in findings if f.level == "error"})
    report.details["standard"] = {"name": "scs-0102", "images": len(images), "conforming": len(images) - len(failing),
                                  "scope": "public and community images, not hidden, active (the checker's)",
                                  "failing_checks": sorted({f.check for f in findings if f.level == "error"}),
                                  "findings": [f.to_dict() for f in findings]}
    if failing:
        report.ok = False
        raise BakeryError(f"SCS-0102: {len(failing)} of {len(images)} images do not conform "
                          f"({sum(f.level == 'error' for f in findings)} errors; the first: {_first_error(findings)})",
                          hint="the report lists every finding; properties come from the manifest's scs: section")


def _first_error(findings: list[scs.Finding]) -> str:
    first = next(f for f in findings if f.level == "error")
    return f"{first.image_id}: {first.message}"


def _all_images(target: Target) -> dict[str, dict]:
    return {image["id"]: image for image in list_including_hidden(target)}


def _windows(images: dict[str, dict]) -> dict[str, dict]:
    return {image_id: image for image_id, image in images.items() if looks_windows(image)}


def _image_entry(image: dict) -> dict:
    return {"id": image["id"], "name": image.get("name"), "owner": image.get("owner"), "recommended": image.get("recommended"),
            "hidden": bool(image.get("os_hidden")), "uploading": image.get(STATE_KEY) is not None,
            "findings": [f.to_dict() for f in lint_glance_image(image)]}


def _upload_entry(image: dict) -> dict:
    state = lease_state(image)
    return {"id": image["id"], "name": image.get("name"), "owner": image.get("owner"), "size": image.get("size"),
            "abandoned": state.expired, "why": state.why}


def _family_health(key: tuple, members: list[dict]) -> dict:
    recommended = [m for m in members if m.get("recommended") == "true"]
    candidates = [m for m in members if not m.get(release.WITHDRAWN_KEY) and m.get("status") == "active"]
    newest = max(candidates, key=release.release_order, default=None)
    problems = []
    if not recommended:
        problems.append("no recommended image")
    if len(recommended) > 1:
        problems.append(f"{len(recommended)} recommended images: {', '.join(m['id'] for m in recommended)}")
    if newest and recommended and newest not in recommended:
        problems.append(f"the newest release {newest['id']} ({newest.get('release_date')}) is not the recommended one")
    for m in members:
        if m.get("os_hidden") and m.get("recommended") == "true":
            problems.append(f"hidden image {m['id']} is still recommended")
    stale = [m["id"] for m in members if newest and m is not newest and m.get("superseded_by") != newest["id"]]
    if stale and len(members) > 1:
        problems.append(f"not superseded by the newest release: {', '.join(stale)}")
    never_demoted = [m["id"] for m in members if "recommended" not in m]
    if never_demoted:
        problems.append(f"images without a recommended property (never demoted): {', '.join(never_demoted)}")
    return {"owner": key[0], "family": "/".join(key[1:]), "images": len(members), "recommended": [m["id"] for m in recommended],
            "newest": newest["id"] if newest else None, "problems": problems}


def _repair(target: Target, images: dict[str, dict]) -> dict:
    """The project's own families converged, its abandoned uploads deleted; what was done."""
    deleted = []
    for image in images.values():
        if image.get(STATE_KEY) is not None and image.get("owner") == target.project_id and lease_state(image).expired:
            target.glance.images.delete(image["id"])
            deleted.append(image["id"])
    converged = []
    families = {tuple((k, image.get(k)) for k in DEFAULT_FAMILY_KEYS) for image in images.values()
                if image.get("owner") == target.project_id and image.get(STATE_KEY) is None
                and all(image.get(k) for k in DEFAULT_FAMILY_KEYS)}
    for family in sorted(families):
        result = release.converge(target, dict(family))
        converged.append({"family": "/".join(v for _, v in family), **result.to_dict()})
    return {"deleted_uploads": deleted, "families": converged}
