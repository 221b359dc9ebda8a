"""One release's notes: what is in it (from its SBOM), what changed since the family's previous release
(components old -> new, properties, size), and the canary's verdict with the picture of the boot.

    OUT/<family>/<release>/notes.md      for a merge request or a mail
    OUT/<family>/<release>/notes.html    the same, with the picture; static, readable on a phone
    OUT/<family>/<release>/boot.png      the guest's screen when the canary judged it ready
    OUT/<family>/<release>/sbom.cdx.json the release's SBOM
    OUT/<family>/<release>/release.json  what the family page needs of this release
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.files import write_atomically
from pipeline.common.units import human_size
from pipeline.notes.render import environment, md, slug
from pipeline.sbom import Sbom
from pipeline.sbom.changes import Change, compare

PICTURE = "boot.png"
SBOM = "sbom.cdx.json"
SUMMARY = "release.json"
# Properties that change with every build by construction: shown apart, after the ones a reader decides on.
PROVENANCE_PREFIX = "bakery_"


@dataclass(frozen=True)
class ReleaseSide:
    """One release as the notes show it."""

    name: str
    release_date: str
    properties: dict[str, str]
    size: int | None = None  # bytes uploaded (the raw image)
    virtual_size: int | None = None
    image_id: str | None = None  # in the cloud, when it is there
    sbom: Sbom | None = None  # the CycloneDX document, as its bytes were recorded
    sbom_source: str = "none"  # artifact | local store | read again from the image's bytes | none

    @property
    def sbom_sha256(self) -> str | None:
        return self.sbom.sha256 if self.sbom else None

    @property
    def build_id(self) -> str | None:
        return self.properties.get("bakery_build_id")

    @property
    def windows(self) -> str:
        system = next((c for c in (self.sbom.data if self.sbom else {}).get("components", []) if c.get("type") == "operating-system"), None)
        if system:
            return f"{system.get('name')} {system.get('version')}"
        return self.properties.get("bakery_windows_product") or self.properties.get("os_distro", "?")


@dataclass(frozen=True)
class Canary:
    verdict: str | None  # the bakery_canary property: "ok accelerator=tcg duration_s=16"
    machine: str = ""
    picture: Path | None = None


@dataclass
class ReleaseNotes:
    family: str
    new: ReleaseSide
    previous: ReleaseSide | None
    canary: Canary | None = None
    notes: list[str] = field(default_factory=list)  # what the reader must know about how they were made

    @property
    def changes(self) -> list[Change]:
        if not self.new.sbom:
            return []
        return compare(self.previous.sbom.data if self.previous and self.previous.sbom else None, self.new.sbom.data)

    @property
    def property_changes(self) -> list[tuple[str, str | None, str | None]]:
        before = self.previous.properties if self.previous else {}
        after = self.new.properties
        keys = sorted(set(before) | set(after), key=lambda k: (k.startswith(PROVENANCE_PREFIX), k))
        return [(k, before.get(k), after.get(k)) for k in keys if before.get(k) != after.get(k)]

    @property
    def size_change(self) -> tuple[int | None, int | None]:
        return (self.previous.size if self.previous else None, self.new.size)

    def directory(self, out: Path) -> Path:
        return out / slug(self.family) / slug(f"{self.new.release_date}-{self.new.name}-{(self.new.build_id or 'unbuilt')[:12]}")

    def to_dict(self) -> dict:
        return {"family": self.family, "release": _side(self.new), "previous": _side(self.previous) if self.previous else None,
                "changes": [c.to_dict() for c in self.changes],
                "property_changes": [{"property": k, "old": o, "new": n} for k, o, n in self.property_changes],
                "size": {"old": self.size_change[0], "new": self.size_change[1]},
                "canary": {"verdict": self.canary.verdict, "machine": self.canary.machine} if self.canary else None,
                "notes": self.notes}


def write_notes(notes: ReleaseNotes, out: Path) -> Path:
    """The release's folder under `out` (module docstring); returns it."""
    folder = notes.directory(out)
    folder.mkdir(parents=True, exist_ok=True)
    picture = None
    if notes.canary and notes.canary.picture:
        shutil.copyfile(notes.canary.picture, folder / PICTURE)
        picture = PICTURE
    if notes.new.sbom is not None:
        write_atomically(folder / SBOM, notes.new.sbom.text)  # the recorded bytes: its sha256 is the image's property
    write_atomically(folder / "notes.md", markdown(notes))
    html = environment().get_template("release.html.j2").render(
        notes=notes, changes=notes.changes, property_changes=notes.property_changes, picture=picture,
        sbom=SBOM if notes.new.sbom is not None else None, size=_size_line(notes))
    write_atomically(folder / "notes.html", html)
    summary = {"name": notes.new.name, "release_date": notes.new.release_date, "build_id": notes.new.build_id,
               "image_id": notes.new.image_id, "windows": notes.new.windows,
               "verdict": notes.canary.verdict if notes.canary else None, "picture": picture, "notes": "notes.html"}
    write_atomically(folder / SUMMARY, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return folder


def markdown(notes: ReleaseNotes) -> str:
    new, previous = notes.new, notes.previous
    lines = [f"# {md(new.name)} ({md(new.release_date)})", ""]
    lines.append(f"- **Family:** {md(notes.family)}")
    lines.append(f"- **Windows:** {md(new.windows)}")
    if new.image_id:
        lines.append(f"- **Glance image:** {md(new.image_id)}")
    lines.append(f"- **Build:** {md(new.build_id or '?')}")
    lines.append("- **Previous release:** " + (f"{md(previous.name)} ({md(previous.release_date)})" if previous else "none (the family's first)"))
    lines.append(f"- **Size:** {md(_size_line(notes))}")
    if notes.canary:
        lines.append(f"- **Canary:** {md(notes.canary.verdict or 'not run')} on {md(notes.canary.machine or '?')}")
    if new.sbom_sha256:
        lines.append(f"- **SBOM:** sha256 {md(new.sbom_sha256)} ({md(new.sbom_source)})")
    for note in notes.notes:
        lines.append(f"- **Note:** {md(note)}")
    lines += ["", "## Components" + (" changed since the previous release" if previous else ""), ""]
    changes = notes.changes
    if not new.sbom:
        lines.append("No SBOM for this release: its components are unknown.")
    elif not changes:
        lines.append("No component changed.")
    else:
        lines += ["| Kind | Component | Change | Old | New |", "|---|---|---|---|---|"]
        lines += [f"| {c.kind} | {md(c.name)} | {c.action} | {md(c.old or '')} | {md(c.new or '')} |" for c in changes]
    lines += ["", "## Properties" + (" changed" if previous else ""), ""]
    if notes.property_changes:
        lines += ["| Property | Old | New |", "|---|---|---|"]
        lines += [f"| {md(k)} | {md(o if o is not None else '(absent)')} | {md(n if n is not None else '(absent)')} |"
                  for k, o, n in notes.property_changes]
    else:
        lines.append("No property changed.")
    return "\n".join(lines) + "\n"


def _size_line(notes: ReleaseNotes) -> str:
    old, new = notes.size_change
    if old is None:
        return human_size(new)
    delta = (new or 0) - old
    return f"{human_size(old)} -> {human_size(new)} ({'+' if delta >= 0 else '-'}{human_size(abs(delta))})"


def _side(side: ReleaseSide) -> dict:
    return {"name": side.name, "release_date": side.release_date, "image_id": side.image_id, "build_id": side.build_id,
            "size": side.size, "virtual_size": side.virtual_size, "windows": side.windows, "sbom_sha256": side.sbom_sha256,
            "sbom_source": side.sbom_source}
