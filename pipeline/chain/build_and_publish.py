"""`invoke build-and-publish`: the whole chain in one process."""

from __future__ import annotations

from pipeline.build.image import discard
from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import prepare
from pipeline.chain.targets import publish_everywhere
from pipeline.common.report import Report
from pipeline.glance.connect import Target


def build_and_publish(options: JobOptions, report: Report, *, target: Target | None = None) -> Report:
    """Build once, then publish, verify and release to every target: the first alone (a corrupt cache entry
    is rebuilt there), the others concurrently. A failed target never demotes its previous release; the
    targets that succeeded keep their verified release; any failure makes the run fail."""
    prepared = [prepare(options, report, convert=True)]  # a cell: a rebuild on the first target replaces it
    try:
        return publish_everywhere(prepared, options, report, target)
    finally:
        discard(prepared[0].image)
