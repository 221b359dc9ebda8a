"""`invoke lock`: every input of a manifest's build, resolved and pinned in its lock file."""

from __future__ import annotations

from pipeline.chain.options import JobOptions
from pipeline.chain.prepare import load
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.repro import lock as lockfile
from pipeline.repro import runner


def write_lock(options: JobOptions, report: Report) -> Report:
    """Resolve every input of the manifest's build (each file checked against its pin) into its lock file."""
    manifest = load(options, report)
    runner.fetch_inputs(manifest, report)
    written = lockfile.write(manifest, options.lock)
    report.details["lock"] = {"path": str(written.path), "sha256": written.sha256, "pins": written.pins}
    say(f"wrote {written.path} ({len(written.pins)} pins, sha256 {written.sha256[:12]})")
    report.ok = True
    return report
