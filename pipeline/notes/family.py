"""A static HTML page per family: its releases newest first, which one is recommended, each one's canary verdict
and picture of the boot, and links to their notes. Plain files beside the notes (OUT/<family>/index.html)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.files import write_atomically
from pipeline.notes.release import SUMMARY
from pipeline.notes.render import environment, slug


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    release_date: str
    state: str  # recommended | superseded | hidden | deactivated | not in the cloud | ...
    image_id: str | None = None
    windows: str = ""
    verdict: str | None = None
    notes: str | None = None  # a path relative to the family page
    picture: str | None = None


def local_entries(family_dir: Path) -> dict[str, FamilyEntry]:
    """The releases whose notes are in this family's folder, by build id (or folder name)."""
    found = {}
    for summary in sorted(family_dir.glob(f"*/{SUMMARY}")):
        if summary.is_symlink() or summary.parent.is_symlink() or slug(summary.parent.name) != summary.parent.name:
            continue  # only folders write_notes makes: their names are safe in a link
        try:
            data = json.loads(summary.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        folder = summary.parent.name

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        found[text("build_id") or folder] = FamilyEntry(
            name=text("name") or folder, release_date=text("release_date") or "", state="not in the cloud (or not looked up)",
            image_id=text("image_id"), windows=text("windows") or "", verdict=text("verdict"),
            notes=f"{folder}/notes.html" if (summary.parent / "notes.html").is_file() else None,
            picture=f"{folder}/{text('picture')}" if text("picture") == "boot.png" and (summary.parent / "boot.png").is_file() else None)
    return found


def write_family_page(out: Path, family: str, entries: list[FamilyEntry]) -> Path:
    """OUT/<family>/index.html, newest release first."""
    folder = out / slug(family)
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(entries, key=lambda e: (e.release_date, e.name), reverse=True)
    html = environment().get_template("family.html.j2").render(family=family, entries=ordered)
    write_atomically(folder / "index.html", html)
    return folder / "index.html"
