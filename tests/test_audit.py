"""lint IMAGE-ID and audit, against the local Glance seeded with good and bad images."""

from __future__ import annotations

import pytest

from pipeline.common.errors import BakeryError, LintFailed
from pipeline.common.report import Report
from pipeline.properties import image_lint
from pipeline.publish import audit

GOOD = {"os_distro": "windows", "os_type": "windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP",
        "architecture": "x86_64", "release_date": "2026-11-01", "recommended": "true"}
SEED = {"os": "WINDOWS", "os_distro": "Windows", "os_distro_major": "w10entx64", "os_edition": "DESKTOP",
        "architecture": "x86_64", "os_version": "UNKNOWN", "release_date": "2020-03-02", "recommended": "true"}


def seed(target, name, props, **core):
    image = target.glance.images.create(name=name, disk_format="raw", container_format="bare", visibility="private", **core, **props)
    return image["id"]


def test_lint_image_passes_a_good_image_and_stops_on_the_seed(target):
    good = seed(target, "good", GOOD)
    bad = seed(target, "Windows 10 - With Apps [2020-03-02]", SEED)
    assert image_lint.lint_image(target, good, Report("lint")).ok
    with pytest.raises(LintFailed) as caught:
        image_lint.lint_image(target, bad, Report("lint"))
    assert caught.value.findings[0].rule == "os-type-windows"


def test_lint_image_unknown_id(target):
    with pytest.raises(BakeryError, match="not found"):
        image_lint.lint_image(target, "00000000-0000-0000-0000-000000000000", Report("lint"))


def test_audit_reports_findings_and_family_health(target):
    ok_id = seed(target, "Windows 10 [2026-11-01]", {**GOOD, "os_distro_major": f"w10-{target.project_id}"})
    bad_id = seed(target, "Windows 10 - With Apps [2020-03-02]", {**SEED, "os_distro_major": f"seed-{target.project_id}"})
    twin_a = seed(target, "Server A", {**GOOD, "os_distro_major": f"twin-{target.project_id}"})
    twin_b = seed(target, "Server B", {**GOOD, "os_distro_major": f"twin-{target.project_id}", "os_hidden": True})
    linux = seed(target, "Debian 12", {"os_distro": "debian", "os_type": "linux"})

    report = audit.audit(target, Report("audit"))

    by_id = {i["id"]: i for i in report.details["images"]}
    assert linux not in by_id
    assert not [f for f in by_id[ok_id]["findings"] if f["severity"] == "error"]
    assert "os-type-windows" in {f["rule"] for f in by_id[bad_id]["findings"]}
    families = {f["family"]: f for f in report.details["families"] if f["owner"] == target.project_id}
    twins = families[f"windows/twin-{target.project_id}/DESKTOP/x86_64"]
    assert any("2 recommended images" in p for p in twins["problems"])
    assert any(f"hidden image {twin_b} is still recommended" in p for p in twins["problems"])
    assert families[f"windows/w10-{target.project_id}/DESKTOP/x86_64"]["problems"] == []
    assert twin_a in twins["recommended"]


def test_explain_image_unknown_id(target):
    from pipeline.properties.explain import explain_image

    with pytest.raises(BakeryError, match="not found"):
        explain_image(target, "00000000-0000-0000-0000-000000000000", Report("explain"), nova="master")
