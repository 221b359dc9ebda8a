"""Glance's metadata-definition catalogue, read from the JSON files the glance package ships.

Glance itself does not enforce these definitions (it stores any string), so the client has to.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.errors import BakeryError

IMAGE_RESOURCE = "OS::Glance::Image"


@dataclass(frozen=True)
class PropertyDefinition:
    name: str  # with the namespace's prefix for images, e.g. hw_tpm_version
    namespace: str
    type: str | None
    enum: tuple[str, ...]


def metadefs_dir() -> Path:
    candidates = [
        os.environ.get("BAKERY_METADEFS_DIR"),
        Path(sys.prefix) / "etc/glance/metadefs",
        "/usr/local/etc/glance/metadefs",
        "/etc/glance/metadefs",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    raise BakeryError("Glance's metadefs JSON files were not found", hint="install the glance package (`make deps`) or set BAKERY_METADEFS_DIR")


@functools.cache
def image_properties(directory: Path | None = None) -> dict[str, PropertyDefinition]:
    """Every image property the catalogue defines; enums merged when several namespaces define one."""
    found: dict[str, PropertyDefinition] = {}
    for path in sorted((directory or metadefs_dir()).glob("*.json")):
        namespace = json.loads(path.read_text())
        for association in namespace.get("resource_type_associations", []):
            if association.get("name") != IMAGE_RESOURCE:
                continue
            prefix = association.get("prefix") or ""
            for name, spec in _all_properties(namespace):
                full = prefix + name
                enum = tuple(spec.get("enum") or (spec.get("items") or {}).get("enum") or ())
                previous = found.get(full)
                if previous:
                    enum = tuple(dict.fromkeys(previous.enum + enum)) if previous.enum and enum else ()
                found[full] = PropertyDefinition(full, namespace["namespace"], spec.get("type"), enum)
    return found


def _all_properties(namespace: dict):
    yield from namespace.get("properties", {}).items()
    for obj in namespace.get("objects", []):
        yield from obj.get("properties", {}).items()
