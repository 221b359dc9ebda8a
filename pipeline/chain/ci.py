"""`invoke ci`: a catalog's CI pipeline, from manifests that pass lint."""

from __future__ import annotations

from pathlib import Path

from pipeline.chain.lint import lint_manifest
from pipeline.chain.options import JobOptions
from pipeline.ci import catalog as ci_catalog
from pipeline.ci import gitlab
from pipeline.common.errors import BakeryError
from pipeline.common.files import write_atomically
from pipeline.common.progress import say
from pipeline.common.report import Report
from pipeline.manifest import parse_variables


def _lint_catalog(entries: list, options: gitlab.Options) -> None:
    """The lint the pipeline's lint job runs, run now: a catalog that would fail it is not generated. One line per
    failing manifest, then the error."""
    failing = []
    for entry in entries:
        try:
            lint_manifest(JobOptions(entry.path, variables=options.variables), Report("lint"))
        except BakeryError as exc:
            failing.append(entry.path.name)
            say(f"{entry.path}: {exc.one_line()}")
    if failing:
        raise BakeryError(f"{len(failing)} of {len(entries)} manifests fail lint ({', '.join(failing)}): the pipeline's lint job "
                          "would fail; nothing was generated")


def generate_ci(report: Report, *, engine: str, catalog: Path, clouds: tuple[str, ...], options: gitlab.Options,
                out: Path | None) -> str:
    """`invoke ci`: the catalog's pipeline for a CI engine, validated manifests only."""
    if engine != "gitlab":
        raise BakeryError(f"--engine {engine}: unknown; expected gitlab")
    entries, skipped = ci_catalog.read(catalog, base=out.parent if out else Path.cwd(), clouds=clouds,
                                       variables=parse_variables(list(options.variables)))
    for entry in skipped:
        say(f"{entry.path}: skipped: {entry.reason}")
    _lint_catalog(entries, options)
    document = gitlab.pipeline(entries, options)
    text = gitlab.render(document)
    if out:
        write_atomically(out, text)
    report.details["ci"] = {"engine": engine, "out": str(out) if out else None, "text": text,
                            "skipped": [{"manifest": str(s.path), "reason": s.reason} for s in skipped],
                            "jobs": [name for name in document if ":" in name or name == "lint"],
                            "families": sorted({"/".join(e.family) for e in entries})}
    report.ok = True
    return text
