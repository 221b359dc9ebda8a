"""The life of a release after it is superseded: kept visible for a while, then hidden, deactivated, deleted,
as the manifest's release.lifecycle says, and never while something uses it.

The plan is computed from what Glance holds now, the same way by every run: a run that stops half-way
leaves every image either done or untouched, and the next run plans only what is left. Ages count from
the day a release stopped being the newest: the release date of the one that replaced it. What the plan
never touches: the recommended release, a release withdrawn by a rollback, images of other projects,
images outside the family, protected or exempt images. An image's own uuid_validity (SCS-0102), the
promise made when it was published, is a floor under deactivation and deletion.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from glanceclient import exc as glance_exc
from keystoneauth1 import exceptions as ksa_exceptions

from pipeline.common.errors import BakeryError
from pipeline.common.progress import say
from pipeline.common.secrets import redact
from pipeline.glance.connect import Target
from pipeline.glance.images import STATE_KEY, list_including_hidden
from pipeline.glance.usage import UsageReport, image_usage
from pipeline.manifest import LifecyclePolicy
from pipeline.properties.scs import renamed_for_hiding
from pipeline.publish.release import WITHDRAWN_KEY, release_order

ACTIONS = ("keep", "hide", "deactivate", "delete")  # in increasing order of harm
STATUSES = ("active", "deactivated")


@dataclass
class Decision:
    image: dict
    action: str
    why: str
    superseded_since: str | None = None
    age_days: int | None = None
    usage: UsageReport | None = None
    done: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        image = self.image
        return {"id": image["id"], "name": image.get("name"), "release_date": image.get("release_date"),
                "status": image.get("status"), "hidden": bool(image.get("os_hidden")), "visibility": image.get("visibility"),
                "superseded_since": self.superseded_since, "age_days": self.age_days, "action": self.action, "why": self.why,
                "usage": self.usage.to_dict() if self.usage else None, "done": self.done, "error": self.error}


@dataclass
class LifecyclePlan:
    family: dict[str, str]
    today: str
    decisions: list[Decision] = field(default_factory=list)

    @property
    def changes(self) -> list[Decision]:
        return [d for d in self.decisions if d.action != "keep"]

    @property
    def failed(self) -> list[Decision]:
        return [d for d in self.decisions if d.error]

    def to_dict(self) -> dict:
        return {"family": self.family, "today": self.today, "decisions": [d.to_dict() for d in self.decisions]}


@dataclass(frozen=True)
class Reach:
    """Whose family the plan is about and who answers "is it in use".

    owner: the project that owns the family's images (the caller's by default; an admin retiring the images a
    member published as `community` names the member's project). usage: the credential the Nova and Cinder
    listings go through (the caller's by default; a second, read-only cloud entry that may list every
    project's servers and volumes makes "in use" answerable for images other projects can boot)."""
    owner: str | None = None
    usage: Target | None = None


def plan(target: Target, family: dict[str, str], policy: LifecyclePolicy, today: dt.date, *, scs: bool = False,
         reach: Reach = Reach()) -> LifecyclePlan:
    """What the policy asks for each member of the family now, and why; changes nothing."""
    result = LifecyclePlan(dict(family), today.isoformat())
    members = _members(target, family, reach.owner or target.project_id)
    competing = [m for m in members if not m.get(WITHDRAWN_KEY)]
    superseded = [m for m in competing if m.get("recommended") != "true"]
    newest = competing[0] if competing else None
    for image in members:
        if image is newest or image.get("recommended") == "true":
            result.decisions.append(Decision(image, "keep", "the recommended release"))
        elif image.get(WITHDRAWN_KEY):
            result.decisions.append(Decision(image, "keep", f"withdrawn by a rollback to {image[WITHDRAWN_KEY]}: decide by hand"))
        else:
            result.decisions.append(_decide(reach.usage or target, image, competing, superseded.index(image), policy, today,
                                            scs=scs))
    return result


def _members(target: Target, family: dict[str, str], owner: str) -> list[dict]:
    """The owner's verified images of the family, active or deactivated, hidden or not, newest first."""
    found = {}
    # Glance lists community images only to their owner unless asked for visibility=all
    visibility = {} if owner == target.project_id else {"visibility": "all"}
    for image in list_including_hidden(target, {**family, "owner": owner, **visibility}):
        if image.get("owner") == owner and image.get(STATE_KEY) is None and image.get("status") in STATUSES:
            found[image["id"]] = image
    return sorted(found.values(), key=release_order, reverse=True)


def _decide(usage: Target, image: dict, competing: list[dict], position: int, policy: LifecyclePolicy, today: dt.date,
            *, scs: bool) -> Decision:
    """position: 0 for the newest superseded release."""
    since = _superseded_since(image, competing)
    age = (today - since).days if since else None
    decision = Decision(image, "keep", "", superseded_since=since.isoformat() if since else None, age_days=age)
    exempt = _exemption(image, policy)
    if exempt:
        decision.why = exempt
        return decision
    wanted, why = _wanted(policy, position, age)
    fallback = "hide" if _wants_hide(policy, position, age) else "keep"  # when removal is not allowed
    promise = _promise(image, wanted, position, today)
    if promise:
        wanted, why = fallback, f"{why}, but {promise}"
    if wanted in ("deactivate", "delete"):
        decision.usage = image_usage(usage, image, policy.in_use_checks)
        kept = decision.usage.why_kept()
        if kept:
            wanted, why = fallback, f"{why}, but {kept}"
    decision.action, decision.why = _not_yet_done(image, wanted, why, policy, scs=scs)
    return decision


def _superseded_since(image: dict, competing: list[dict]) -> dt.date | None:
    """The release date of the next newer release: the day this one stopped being the newest."""
    index = next(i for i, m in enumerate(competing) if m["id"] == image["id"])
    successor = competing[index - 1] if index > 0 else None
    for value in ((successor or {}).get("release_date"), str((successor or {}).get("created_at") or "")[:10]):
        try:
            return dt.date.fromisoformat(value)
        except (TypeError, ValueError):
            continue
    return None


def _exemption(image: dict, policy: LifecyclePolicy) -> str | None:
    if image.get("protected"):
        return "protected in Glance"
    tags = set(image.get("tags") or ())
    for tag in policy.exempt_tags:
        if tag in tags:
            return f"exempt: tagged {tag}"
    for key, value in policy.exempt_properties:
        if str(image.get(key)) == value:
            return f"exempt: {key}={value}"
    return None


def _wanted(policy: LifecyclePolicy, position: int, age: int | None) -> tuple[str, str]:
    if age is not None:
        for action, days in (("delete", policy.delete_after_days), ("deactivate", policy.deactivate_after_days)):
            if days is not None and age >= days:
                return action, f"superseded {age} days ago (>= {days}, {action}_after_days)"
    if _wants_hide(policy, position, age):
        if policy.keep_visible is not None and position >= policy.keep_visible:
            return "hide", f"older than the {policy.keep_visible} superseded release(s) kept visible (keep_visible)"
        return "hide", f"superseded {age} days ago (>= {policy.hide_after_days}, hide_after_days)"
    reason = f"superseded {age} days ago" if age is not None else "superseded (date unknown)"
    return "keep", f"{reason}: the policy asks nothing yet"


def _wants_hide(policy: LifecyclePolicy, position: int, age: int | None) -> bool:
    by_count = policy.keep_visible is not None and position >= policy.keep_visible
    by_age = policy.hide_after_days is not None and age is not None and age >= policy.hide_after_days
    return by_count or by_age


def _promise(image: dict, wanted: str, position: int, today: dt.date) -> str | None:
    """What the image's own uuid_validity (SCS-0102) promises that removing it now would break."""
    if wanted not in ("deactivate", "delete"):
        return None
    validity = str(image.get("uuid_validity") or "")
    if validity in ("forever", "notice"):
        return f"its uuid_validity is {validity}"
    if re.fullmatch(r"last-\d+", validity) and position < int(validity[5:]):
        return f"its uuid_validity is {validity} and it is superseded release {position + 1}"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", validity) and today <= dt.date.fromisoformat(validity):
        return f"its uuid_validity promises it until {validity}"
    return None


def _not_yet_done(image: dict, wanted: str, why: str, policy: LifecyclePolicy, *, scs: bool) -> tuple[str, str]:
    if wanted == "hide" and _hidden(image, policy) and (not scs or _renamed(image)):
        return "keep", f"{why} (already hidden)"
    if wanted == "deactivate" and image.get("status") == "deactivated":
        return "keep", f"{why} (already deactivated)"
    return wanted, why


def _hidden(image: dict, policy: LifecyclePolicy) -> bool:
    return image.get("visibility") == "community" if policy.hide_as == "community" else bool(image.get("os_hidden"))


def _renamed(image: dict) -> bool:
    name = image.get("name") or ""
    return renamed_for_hiding(name, image.get("image_build_date") or image.get("release_date") or "") == name


def apply(target: Target, planned: LifecyclePlan, policy: LifecyclePolicy, *, scs: bool = False,
          owner: str | None = None) -> LifecyclePlan:
    """Carry the plan out, one image at a time; a failure is recorded and the others still go ahead."""
    for decision in planned.changes:
        try:
            _act(target, decision, policy, scs=scs, owner=owner or target.project_id)
            decision.done = True
            say(f"lifecycle: {decision.action} {decision.image.get('name')} ({decision.image['id']}): {decision.why}")
        except (glance_exc.BaseException, glance_exc.ClientException, ksa_exceptions.ClientException, BakeryError, OSError) as exc:
            decision.error = redact(" ".join(str(exc).split()))[:300] or type(exc).__name__
    return planned


def _act(target: Target, decision: Decision, policy: LifecyclePolicy, *, scs: bool, owner: str) -> None:
    image_id = decision.image["id"]
    current = dict(target.glance.images.get(image_id))
    if current.get("recommended") == "true" or current.get("owner") != owner:
        raise BakeryError(f"{image_id} changed since the plan (now recommended, or owned by another project): left alone")
    if decision.action == "hide":
        update = {"visibility": "community"} if policy.hide_as == "community" else {"os_hidden": True}
        if scs and not _renamed(current):
            update["name"] = renamed_for_hiding(current.get("name") or "", current.get("image_build_date") or current.get("release_date") or "")
        target.glance.images.update(image_id, **update)
    elif decision.action == "deactivate":
        target.glance.images.deactivate(image_id)
    elif decision.action == "delete":
        target.glance.images.delete(image_id)
