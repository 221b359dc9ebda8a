"""`invoke bake`: the chain up to the measured image, written as an artifact for a publish job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.build.image import discard
from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import prepare, recorded_measurement, remember_measurement
from pipeline.common.errors import BakeryError
from pipeline.common.progress import progress, say
from pipeline.common.report import Report
from pipeline.repro import artifact, runner
from pipeline.repro.lock import git_commit


def bake(options: JobOptions, report: Report, *, out: Path, handoff: str = "artifact") -> Report:
    """`invoke bake`: the chain up to the measured image and its property set, written as an artifact; no Glance.
    handoff "cache": the image stays in the (shared) stage cache and the artifact holds only its record."""
    if handoff not in ("artifact", "cache"):
        raise BakeryError(f"--handoff {handoff}: expected artifact or cache")
    if handoff == "cache" and not options.use_cache:
        raise BakeryError("--handoff cache needs the stage cache; drop --no-cache")
    prepared = prepare(options, report, convert=True)
    try:
        if handoff == "cache":
            prepared = dataclasses.replace(prepared, image=runner.in_cache(prepared.cache, prepared.stages, prepared.image))
        known = recorded_measurement(prepared.cache, prepared.stages) if prepared.image.cache_entry else None
        lock = report.details.get("lock")
        with report.stage("artifact"), progress(f"artifact {prepared.image.path.name}", prepared.image.path.stat().st_size) as advance:
            written = artifact.write(out, image=prepared.image.path, manifest=prepared.manifest, build_id=prepared.build_id,
                                     stages=prepared.stages, measured=known,
                                     virtual_size=prepared.image.info.virtual_size if prepared.image.info else None,
                                     propset=prepared.propset, lock_file=Path(lock["path"]) if lock else None,
                                     provenance={"lock_sha256": lock["sha256"] if lock else None,
                                                 "manifest_commit": git_commit(prepared.manifest.path)},
                                     facts=prepared.image.facts, virtio_win_version=prepared.image.virtio_win_version,
                                     source_sha256=prepared.image.source_sha256, move=prepared.image.temporary, on_read=advance,
                                     cache_entry=prepared.image.cache_entry if handoff == "cache" else None, sbom=prepared.sbom,
                                     canary_picture=prepared.canary.picture if prepared.canary else None,
                                     canary_machine=prepared.canary.machine if prepared.canary else "")
        if known is None:
            remember_measurement(prepared, written.measurement)
    finally:
        discard(prepared.image)
    report.details["artifact"] = written.to_dict()
    say(f"artifact {out}: {written.id[:16]} (build {prepared.build_id[:12]}, {written.measurement.size:,} bytes)")
    report.ok = True
    return report
