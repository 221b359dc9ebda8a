"""What a release engineer hands on with a release: its notes (what is in it, what changed since the family's
previous release, the picture of its boot) and a static page per family. Documents only: the chain gathers
the releases (from artifacts or a cloud) and this package writes Markdown and HTML. Imports sbom and common
only: it never reaches a cloud or an image itself."""

from pipeline.notes.family import FamilyEntry, write_family_page
from pipeline.notes.release import Canary, ReleaseNotes, ReleaseSide, write_notes

__all__ = ["Canary", "FamilyEntry", "ReleaseNotes", "ReleaseSide", "write_family_page", "write_notes"]
