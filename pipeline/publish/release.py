"""Release: make the family's newest verified image the recommended one, and every other one superseded.

A family is the set of verified images of one owner that share the manifest's family properties
(os_distro, os_distro_major, os_edition, architecture by default). Glance has no transactions, and several
runs may publish members of one family at once, or be killed between their writes. So the release step is
not "demote the others" but convergence to one state that every run computes the same way from what it
reads:

- the winner is the newest release by release_date, ties broken by creation time, then by id;
  a release withdrawn by a rollback (`--allow-older`) does not compete;
- the winner has recommended=true and no superseded_by; every other member has recommended=false and
  superseded_by=<winner> (and os_hidden with release.previous: hide);
- the winner is promoted before anything is demoted: a moment with two recommended images is less harmful
  than a moment with none;
- a run reads, writes what differs, and reads again until nothing differs. A run never touches a member it
  has not seen, so it cannot demote a newer release it does not know; the last run to finish sees every
  verified member, and any run of any member of the family repairs what an interrupted one left.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from glanceclient import exc as glance_exc

from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY, list_including_hidden
from pipeline.manifest import Manifest
from pipeline.properties.scs import marked_outdated, renamed_for_hiding

WITHDRAWN_KEY = "bakery_withdrawn_by"  # set on a newer release when an older one is published with --allow-older
MAX_ROUNDS = 8
# What a write lost to another run's write of the same image looks like. Glance on MySQL/MariaDB answers 500
# when two PATCHes add the same property at once (the second INSERT into image_properties is a duplicate
# key; Glance does not turn DBDuplicateEntry into a 409), and 409 where it does notice. Each write here is
# recomputed from a fresh read, so the answer is to read again, never to give up or to repeat blindly.
RACE_ERRORS = (glance_exc.HTTPInternalServerError, glance_exc.HTTPConflict)


@dataclass(frozen=True)
class Release:
    id: str
    name: str
    release_date: str
    visibility: str
    hidden: bool
    recommended: str | None = None
    superseded_by: str | None = None
    withdrawn: bool = False
    created_at: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "release_date": self.release_date, "visibility": self.visibility,
                "hidden": self.hidden}

    @property
    def order(self) -> tuple[str, str, str]:
        return release_order({"release_date": self.release_date, "created_at": self.created_at, "id": self.id})


@dataclass
class Convergence:
    winner: Release | None
    demoted: list[Release] = field(default_factory=list)
    promoted: bool = False
    rounds: int = 0

    def to_dict(self) -> dict:
        return {"winner": self.winner.id if self.winner else None, "demoted": [r.id for r in self.demoted],
                "promoted": self.promoted, "rounds": self.rounds}


def release_order(image: dict) -> tuple[str, str, str]:
    """Newest last: by release date, then creation time, then id (the one order every run computes alike)."""
    return (image.get("release_date") or "", str(image.get("created_at") or ""), image["id"])


def family_members(target: Target, manifest: Manifest, *, recommended_only: bool = True) -> list[Release]:
    """Verified images of the family owned by the target project, hidden ones included, newest first."""
    return members(target, manifest.family_filter, recommended_only=recommended_only)


def members(target: Target, family: dict[str, str], *, recommended_only: bool = False) -> list[Release]:
    base = dict(family)
    if recommended_only:
        base["recommended"] = "true"
    found: dict[str, Release] = {}
    for image in list_including_hidden(target, base, sort="created_at:desc"):
        if image.get("owner") == target.project_id and image.get(STATE_KEY) is None and image.get("status") == "active":
            found[image["id"]] = _release(image)
    return sorted(found.values(), key=lambda r: r.order, reverse=True)


def _release(image: dict) -> Release:
    return Release(id=image["id"], name=image.get("name") or "", release_date=image.get("release_date") or "",
                   visibility=image.get("visibility") or "", hidden=bool(image.get("os_hidden")),
                   recommended=image.get("recommended"), superseded_by=image.get("superseded_by"),
                   withdrawn=bool(image.get(WITHDRAWN_KEY)), created_at=str(image.get("created_at") or ""))


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


def withdraw_newer(target: Target, manifest: Manifest, new_id: str) -> list[Release]:
    """A deliberate rollback (--allow-older): the newer releases stop competing for recommended."""
    withdrawn = [r for r in members(target, manifest.family_filter) if r.id != new_id and r.release_date > manifest.release_date]
    for release in withdrawn:
        target.glance.images.update(release.id, **{WITHDRAWN_KEY: new_id})
    return withdrawn


def converge(target: Target, family: dict[str, str], *, policy: str = "demote", rename: bool = False) -> Convergence:
    """Write what differs from the one right state of the family until nothing differs (module docstring)."""
    result = Convergence(None)
    lost: Exception | None = None  # the last write another run's write made fail
    for result.rounds in range(1, MAX_ROUNDS + 1):
        current = members(target, family)
        candidates = [m for m in current if not m.withdrawn]
        if not candidates:
            return result
        winner = max(candidates, key=lambda m: m.order)
        result.winner = winner
        changes = _changes(current, winner, policy, rename=rename)
        if not changes:
            _record_supersedes(target, winner, result.demoted)
            return result
        for release, update in changes:  # the winner comes first
            try:
                target.glance.images.update(release.id, **update)
            except glance_exc.HTTPNotFound:
                continue  # deleted meanwhile: the next read no longer sees it
            except RACE_ERRORS as exc:
                lost = exc  # another run wrote the same image at the same moment: the next round reads it again
                continue
            if release.id == winner.id:
                result.promoted = True
            elif update.get("recommended") == "false" and release.recommended == "true":
                result.demoted.append(release)
        time.sleep(random.uniform(0.05, 0.3))  # let concurrent runs' writes land before reading again
    why = f"Glance kept failing its writes: {lost}" if lost else "other runs keep changing it"
    raise BakeryError(f"the release of family {'/'.join(family.values())} did not settle after {MAX_ROUNDS} rounds ({why})",
                      hint="run again, or `invoke audit --repair`, once the other runs finished")


def _changes(current: list[Release], winner: Release, policy: str, *, rename: bool = False) -> list[tuple[Release, dict]]:
    """rename (an scs: family): superseded releases get their date appended to their name, as SCS-0102 names an
    outdated image, so the standard's checker finds the current one under the plain name."""
    changes = []
    if winner.recommended != "true" or winner.superseded_by:
        update = {"recommended": "true"}
        if winner.superseded_by:
            update["remove_props"] = ["superseded_by"]
        changes.append((winner, update))
    for member in current:
        if member.id == winner.id:
            continue
        update = {}
        if member.recommended != "false":
            update["recommended"] = "false"
        if member.superseded_by != winner.id:
            update["superseded_by"] = winner.id
        if policy == "hide" and not member.hidden:
            update["os_hidden"] = True
        if rename and member.name == winner.name and not marked_outdated(member.name):
            update["name"] = renamed_for_hiding(member.name, member.release_date)
        if update:
            changes.append((member, update))
    return changes


def _record_supersedes(target: Target, winner: Release, demoted: list[Release]) -> None:
    if not demoted:
        return
    for attempt in range(MAX_ROUNDS):
        try:
            already = [i for i in (target.glance.images.get(winner.id).get("supersedes") or "").split(",") if i]
            ids = list(dict.fromkeys(already + [r.id for r in demoted]))
            target.glance.images.update(winner.id, supersedes=",".join(ids))
            return
        except glance_exc.HTTPNotFound:
            return
        except RACE_ERRORS:
            if attempt == MAX_ROUNDS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.3))  # another run recorded its own at the same moment: read again


def release(target: Target, manifest: Manifest, new_id: str, *, allow_older: bool = False) -> Convergence:
    """The release step of one run: withdraw newer releases on a rollback, then converge the family."""
    if allow_older:
        withdrawn = withdraw_newer(target, manifest, new_id)
        if withdrawn:
            say(f"rollback: withdrew {', '.join(r.name for r in withdrawn)} (newer than {manifest.release_date})")
    result = converge(target, manifest.family_filter, policy=manifest.release.previous, rename=manifest.scs is not None)
    if result.winner and result.winner.id != new_id:
        say(f"{new_id} is published but not recommended: the family's newest release is {result.winner.name} ({result.winner.id})")
    return result


def _family_label(manifest: Manifest) -> str:
    return "/".join(manifest.family_filter.values())
