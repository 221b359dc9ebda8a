"""Release: retire the previous release of the family, only after the new one is verified.

A family is the set of images of the same owner that share the manifest's family properties
(os_distro, os_distro_major, os_edition, architecture by default). Afterwards exactly one of them is
recommended: the new one, which records what it supersedes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pipeline.common.errors import BakeryError
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY
from pipeline.manifest import Manifest


@dataclass(frozen=True)
class Release:
    id: str
    name: str
    release_date: str
    visibility: str
    hidden: bool

    def to_dict(self) -> dict:
        return asdict(self)


def family_members(target: Target, manifest: Manifest, *, recommended_only: bool = True) -> list[Release]:
    """Verified images of the family owned by the target project, hidden ones included, newest first."""
    base = dict(manifest.family_filter)
    if recommended_only:
        base["recommended"] = "true"
    members: dict[str, Release] = {}
    for filters in (base, {**base, "os_hidden": True}):
        for image in target.glance.images.list(filters=filters, sort="created_at:desc"):
            if image.get("owner") != target.project_id or image.get(STATE_KEY) is not None:
                continue
            members[image["id"]] = Release(
                id=image["id"],
                name=image.get("name") or "",
                release_date=image.get("release_date") or "",
                visibility=image.get("visibility") or "",
                hidden=bool(image.get("os_hidden")),
            )
    return sorted(members.values(), key=lambda r: (r.release_date, r.id), reverse=True)


def to_supersede(target: Target, manifest: Manifest, *, new_id: str | None, allow_older: bool = False) -> list[Release]:
    """The recommended releases the new one will demote; refuses to bury a newer release."""
    previous = [r for r in family_members(target, manifest) if r.id != new_id]
    newer = [r for r in previous if r.release_date > manifest.release_date]
    if newer and not allow_older:
        r = newer[0]
        raise BakeryError(
            f"family {_family_label(manifest)} already recommends a newer release: {r.name} ({r.id}, release_date {r.release_date}) "
            f"> {manifest.release_date}",
            hint="publishing this one would demote it; pass --allow-older if that is really intended",
        )
    return previous


def demote(target: Target, new_id: str, previous: list[Release], *, policy: str) -> list[Release]:
    glance = target.glance
    for release in previous:
        changes: dict = {"recommended": "false", "superseded_by": new_id}
        if policy == "hide":
            changes["os_hidden"] = True
        glance.images.update(release.id, **changes)
    if previous:
        already = [i for i in (glance.images.get(new_id).get("supersedes") or "").split(",") if i]
        ids = list(dict.fromkeys(already + [r.id for r in previous]))
        glance.images.update(new_id, supersedes=",".join(ids))
    return previous


def _family_label(manifest: Manifest) -> str:
    return "/".join(manifest.family_filter.values())
