"""Whether an image is in use: servers booted from it (Nova), volumes created from it (Cinder), projects it
is shared with (Glance members).

A check answers "in use" with who uses it, "not in use", or "cannot tell" with why; the last never reads
as "not in use". A check that is not possible (no such service in the catalog, no permission, an error) is
"cannot tell", and a caller that must not remove a used image keeps it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from keystoneauth1 import exceptions as ksa_exceptions

from pipeline.common import secrets
from pipeline.glance.connect import Target

SERVICE_TYPES = {"servers": ("compute",), "volumes": ("block-storage", "volumev3")}
# What a look at other projects needs in the default policies of Nova and Cinder.
ALL_PROJECTS_ROLE = "admin"


@dataclass(frozen=True)
class Usage:
    check: str  # servers | volumes | members
    users: tuple[str, ...] = ()  # who uses it: "server <id> (project <id>, <status>)", ...
    unknown: str | None = None  # why it cannot be told

    @property
    def in_use(self) -> bool:
        return bool(self.users)

    def describe(self) -> str:
        if self.unknown:
            return f"{self.check}: cannot tell ({self.unknown})"
        return f"{self.check}: " + (", ".join(self.users) if self.users else "none")


@dataclass
class UsageReport:
    checks: list[Usage] = field(default_factory=list)

    @property
    def in_use(self) -> bool:
        return any(u.in_use for u in self.checks)

    @property
    def unknown(self) -> list[Usage]:
        return [u for u in self.checks if u.unknown]

    def why_kept(self) -> str | None:
        """None when the image may go; else what keeps it."""
        used = [u.describe() for u in self.checks if u.in_use]
        if used:
            return "in use: " + "; ".join(used)
        if self.unknown:
            return "in use cannot be ruled out: " + "; ".join(u.describe() for u in self.unknown)
        return None

    def to_dict(self) -> dict:
        return {u.check: {"users": list(u.users), "unknown": u.unknown} for u in self.checks}


def image_usage(target: Target, image: dict, checks: tuple[str, ...]) -> UsageReport:
    report = UsageReport()
    for check in checks:
        ask = {"servers": _servers, "volumes": _volumes, "members": _members}[check]
        try:
            report.checks.append(ask(target, image))
        except ksa_exceptions.ClientException as exc:  # the service failed or refused: never "unused"
            report.checks.append(Usage(check, unknown=secrets.redact(" ".join(str(exc).split()))[:200]))
    return report


def _servers(target: Target, image: dict) -> Usage:
    endpoint, everywhere, unknown = _where_to_look(target, image, "servers")
    if unknown:
        return Usage("servers", unknown=unknown)
    params = {"image": image["id"], **({"all_tenants": "1"} if everywhere else {})}
    # the plain listing: /servers/detail would also ask Neutron for every server's security groups
    found = _get_all(target, f"{endpoint}/servers", params, "servers")
    return Usage("servers", tuple(f"server {s['id']} ({s.get('name')})" for s in found))


def _volumes(target: Target, image: dict) -> Usage:
    endpoint, everywhere, unknown = _where_to_look(target, image, "volumes")
    if unknown:
        return Usage("volumes", unknown=unknown)
    params = {"glance_metadata": json.dumps({"image_id": image["id"]}), **({"all_tenants": "1"} if everywhere else {})}
    listed = _get_all(target, f"{endpoint}/volumes/detail", params, "volumes", headers={"OpenStack-API-Version": "volume 3.4"})
    # Cinder drops the glance_metadata filter for a non-admin (it is not in its resource_filters.json) and
    # answers every volume: each one's own image metadata decides.
    used = [v for v in listed if (v.get("volume_image_metadata") or {}).get("image_id") == image["id"]]
    pending = [v for v in listed if v.get("status") in ("creating", "downloading") and not v.get("volume_image_metadata")]
    if pending and not used:
        return Usage("volumes", unknown=f"volume {pending[0]['id']} is being created and its source cannot be told yet")
    return Usage("volumes", tuple(f"volume {v['id']} ({v.get('name')}, {v.get('status')})" for v in used))


def _members(target: Target, image: dict) -> Usage:
    if image.get("visibility") != "shared":
        return Usage("members")
    members = list(target.glance.image_members.list(image["id"]))
    return Usage("members", tuple(f"shared with project {m['member_id']} ({m['status']})" for m in members
                                  if m.get("status") != "rejected"))


def _where_to_look(target: Target, image: dict, check: str) -> tuple[str | None, bool, str | None]:
    """The service's endpoint, whether all projects can be seen, or why the check cannot be made."""
    endpoint, unknown = _endpoint(target, check)
    everywhere = ALL_PROJECTS_ROLE in target.roles
    if not unknown and not everywhere:
        if image.get("visibility") != "private":
            unknown = (f"the image is {image.get('visibility')} and only an {ALL_PROJECTS_ROLE} may list other projects' "
                       f"{check}")
        elif image.get("owner") and image["owner"] != target.project_id:
            unknown = (f"the image belongs to project {image['owner']} and the credential asking sees only its own "
                       f"project's {check}")
    return endpoint, everywhere, unknown


def _endpoint(target: Target, check: str) -> tuple[str | None, str | None]:
    if target.session is None:
        return None, "the trusted-headers local Glance has no service catalog"
    for service_type in SERVICE_TYPES[check]:
        try:
            url = target.session.get_endpoint(service_type=service_type, **target.endpoint_filter)
        except ksa_exceptions.EndpointNotFound:
            url = None
        if url:
            return url.rstrip("/"), None
    return None, f"no {' or '.join(SERVICE_TYPES[check])} endpoint in the catalog"


def _get_all(target: Target, url: str, params: dict, key: str, *, headers: dict | None = None) -> list[dict]:
    """Every page of a Nova/Cinder listing (both page with a 'next' link)."""
    found, marker = [], None
    for _ in range(1000):
        page = target.session.get(url, params={**params, **({"marker": marker} if marker else {})}, headers=headers or {},
                                  raise_exc=True).json()
        items = page.get(key, [])
        found += items
        if not items or not any(link.get("rel") == "next" for link in page.get(f"{key}_links", [])):
            return found
        marker = items[-1]["id"]
    return found
