"""Where the project's data (templates, elements, manifests) and its git-ignored state live."""

from __future__ import annotations

from pathlib import Path

from pipeline.common.settings import directory_setting

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = PROJECT_ROOT / "templates"
ELEMENTS = PROJECT_ROOT / "elements"
MANIFESTS = PROJECT_ROOT / "manifests"


def state_dir() -> Path:
    """Generated config, the local Glance's data, memos and work directories (git-ignored)."""
    return directory_setting("BAKERY_STATE_DIR", PROJECT_ROOT / ".bakery")


def project_relative(path: Path) -> str:
    """A path as recorded in provenance: relative to the project when it is inside it, else absolute."""
    try:
        return path.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path.resolve())
