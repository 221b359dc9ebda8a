"""Loading a manifest: render it, merge its includes, validate it into a typed Manifest."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pipeline.common.errors import ManifestError
from pipeline.manifest.model import Manifest
from pipeline.manifest.render import load_with_includes
from pipeline.manifest.validate import ISO_DATE, VARIABLE, validate

MAX_VARIABLE = 4096  # a --set value: a path, a pin, a name


def today() -> str:
    return dt.datetime.now(dt.timezone.utc).date().isoformat()


def parse_release_date(value: str | None) -> str:
    if value is None:
        return today()
    if not ISO_DATE.fullmatch(value):
        raise ManifestError("--release-date", None, f"expected an ISO date YYYY-MM-DD, got {value!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ManifestError("--release-date", None, f"{value!r} is not a valid date ({exc})") from None
    return value


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    """`--set key=value` pairs into the render context."""
    variables: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not VARIABLE.fullmatch(key):
            raise ManifestError("--set", None, f"expected key=value with an identifier as key, got {pair!r}")
        if key == "release_date":
            raise ManifestError("--set", None, "release_date is set with --release-date")
        if len(value) > MAX_VARIABLE:
            raise ManifestError("--set", key, f"a value of {len(value):,} characters; at most {MAX_VARIABLE:,}")
        if any(not char.isprintable() for char in value):
            raise ManifestError("--set", key, "the value contains a control or invisible character; remove it")
        variables[key] = value
    return variables


def load_manifest(path: str | Path, *, release_date: str | None = None, variables: dict[str, str] | None = None) -> Manifest:
    path = Path(path)
    if not path.exists():
        raise ManifestError(str(path), None, "no such manifest file")
    if not path.is_file():
        raise ManifestError(str(path), None, "not a regular file; expected a manifest (YAML)")
    context = {"release_date": parse_release_date(release_date), **(variables or {})}
    document, positions = load_with_includes(path, context)
    return validate(path, document, positions, context)


def manifest_from_document(path: Path, document: dict, *, release_date: str, variables: dict[str, str]) -> Manifest:
    """A manifest from its already rendered document (as a lock file records it)."""
    return validate(path, json.loads(json.dumps(document)), {}, {"release_date": release_date, **variables})


