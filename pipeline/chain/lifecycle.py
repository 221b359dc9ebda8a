"""`invoke lifecycle`: past releases hidden, deactivated or deleted as the manifest's policy says."""

from __future__ import annotations

from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import load
from pipeline.chain.targets import carry_out_lifecycle, connect_destinations, first_target, raise_if_failed
from pipeline.common.errors import BakeryError
from pipeline.common.report import Report


def lifecycle(options: JobOptions, report: Report, *, apply: bool, today: str | None = None) -> Report:
    """`invoke lifecycle`: per target, what release.lifecycle asks for each past release (and, with apply, do it)."""
    manifest = load(options, report)
    if not manifest.release.lifecycle.active:
        raise manifest.error(("release", "lifecycle"), "no lifecycle policy: expected keep_visible or a *_after_days setting")
    with report.stage("connect"):
        destinations = connect_destinations(manifest, options, None)
    report.target = first_target(destinations)
    report.details["targets"] = []
    for destination in destinations:
        if destination.target is None:
            raise BakeryError(f"{destination.name}: {destination.error}")
        carried = carry_out_lifecycle(destination.target, manifest, today=today, apply=apply)
        report.details["targets"].append({"name": destination.name, "applied": apply, "plan": carried.to_dict()})
        raise_if_failed(carried, destination.target, manifest, released=False)
    report.ok = True
    return report
