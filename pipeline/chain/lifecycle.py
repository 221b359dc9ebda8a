"""`invoke lifecycle`: past releases hidden, deactivated or deleted as the manifest's policy says."""

from __future__ import annotations

import re

from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import load
from pipeline.chain.targets import carry_out_lifecycle, connect_destinations, first_target, raise_if_failed
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report
from pipeline.glance.connect import connect
from pipeline.publish.lifecycle import Reach

PROJECT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # Keystone's ids: 32 hex digits; other backends' ids stay plain words


def lifecycle(options: JobOptions, report: Report, *, apply: bool, today: str | None = None,
              family_owner: str | None = None, usage_cloud: str | None = None) -> Report:
    """`invoke lifecycle`: per target, what release.lifecycle asks for each past release (and, with apply, do it).

    family_owner: the project whose images make the family (default: the caller's). usage_cloud: a second
    cloud entry, used only to list servers and volumes, for "is it in use" across projects."""
    manifest = load(options, report)
    if not manifest.release.lifecycle.active:
        raise manifest.error(("release", "lifecycle"), "no lifecycle policy: expected keep_visible or a *_after_days setting")
    if family_owner is not None and not PROJECT_ID.fullmatch(family_owner):
        raise BakeryError(f"--family-owner: expected a project id (letters, digits, - and _), got {family_owner!r}")
    with report.stage("connect"):
        destinations = connect_destinations(manifest, options, None)
        if usage_cloud and len(destinations) > 1:
            raise BakeryError(f"--usage-cloud: one credential for {len(destinations)} targets: it answers for one cloud only",
                              hint="run lifecycle once per target with --cloud and that cloud's --usage-cloud")
        usage = connect(usage_cloud) if usage_cloud else None
    reach = Reach(owner=family_owner, usage=usage)
    report.target = first_target(destinations)
    report.details["targets"] = []
    report.details["reach"] = {"family_owner": family_owner, "usage": usage.to_dict() if usage else None}
    for destination in destinations:
        if destination.target is None:
            raise BakeryError(f"{destination.name}: {destination.error}")
        carried = carry_out_lifecycle(destination.target, manifest, today=today, apply=apply, reach=reach)
        report.details["targets"].append({"name": destination.name, "applied": apply, "plan": carried.to_dict()})
        raise_if_failed(carried, destination.target, manifest, released=False)
    report.ok = True
    return report
