"""Which Glance a task talks to, and how it authenticates.

With no cloud configured (no --cloud, no OS_CLOUD, no OS_AUTH_URL) the target is the local Glance, started
if needed. Otherwise clouds.yaml / OS_* variables are read by openstacksdk's config loader, the way every
OpenStack client does, and its keystoneauth1 session is handed to python-glanceclient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from glanceclient import Client as GlanceClient
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import plugin, session

from pipeline.common import secrets
from pipeline.common.errors import BakeryError
from pipeline.glance.local import LOCAL_PROJECT, LOCAL_USER, LocalGlance


@dataclass
class Target:
    glance: Any  # glanceclient.v2.client.Client
    description: str
    project_id: str
    local: bool

    def to_dict(self) -> dict:
        return {"description": self.description, "project_id": self.project_id, "local": self.local}


class TrustedHeaders(plugin.BaseAuthPlugin):
    """keystoneauth1 auth plugin for the local Glance: identity as request headers, sent as-is."""

    def __init__(self, endpoint: str, project_id: str, user_id: str, roles: tuple[str, ...]):
        super().__init__()
        self.endpoint, self.project_id, self.user_id, self.roles = endpoint, project_id, user_id, roles

    def get_headers(self, session, **kwargs):
        return {
            "X-Identity-Status": "Confirmed",
            "X-Project-Id": self.project_id,
            "X-User-Id": self.user_id,
            "X-Roles": ",".join(self.roles),
        }

    def get_endpoint(self, session, **kwargs):
        return self.endpoint

    def get_project_id(self, session, **kwargs):
        return self.project_id


def cloud_configured(cloud: str | None) -> bool:
    return bool(cloud or os.environ.get("OS_CLOUD") or os.environ.get("OS_AUTH_URL"))


def connect(cloud: str | None = None, *, start_local: bool = True) -> Target:
    secrets.register_environment()
    if not cloud_configured(cloud):
        return connect_local(start=start_local)
    return _connect_cloud(cloud)


def connect_local(
    glance: LocalGlance | None = None,
    *,
    start: bool = True,
    project_id: str = LOCAL_PROJECT,
    roles: tuple[str, ...] = ("admin", "member", "reader"),
) -> Target:
    glance = glance or LocalGlance()
    state = glance.up() if start else glance.status()
    if not state.healthy:
        raise BakeryError(state.message, hint="start it with `invoke glance-up`")
    auth = TrustedHeaders(glance.url, project_id, LOCAL_USER, roles)
    client = GlanceClient("2", session=session.Session(auth=auth))
    return Target(client, f"local Glance {glance.url} (project {project_id})", project_id, local=True)


def _connect_cloud(cloud: str | None) -> Target:
    from openstack import exceptions as sdk_exceptions
    from openstack.config import loader

    name = cloud or os.environ.get("OS_CLOUD") or "envvars"
    try:
        region = loader.OpenStackConfig(load_envvars=True).get_one(cloud=cloud)
    except (sdk_exceptions.ConfigException, ksa_exceptions.ClientException) as exc:
        raise BakeryError(f"cloud {name!r}: {secrets.redact(str(exc))}", hint="check clouds.yaml or the OS_* variables") from None
    secrets.register_mapping(region.config)
    auth = region.config.get("auth", {})
    try:
        sess = region.get_session()
        project_id = sess.get_project_id()
        client = GlanceClient(
            "2",
            session=sess,
            service_type="image",
            interface=region.get_interface(),
            region_name=region.get_region_name("image"),
            endpoint_override=region.get_endpoint("image"),
        )
    except ksa_exceptions.ClientException as exc:
        raise BakeryError(
            f"cloud {region.name!r} ({auth.get('auth_url', 'no auth_url')}): authentication failed: "
            f"{type(exc).__name__}: {secrets.redact(str(exc))}",
            hint="check the credentials in clouds.yaml / OS_* variables",
        ) from None
    where = f"cloud {region.name!r} ({auth.get('auth_url', '?')}, region {region.get_region_name('image') or 'default'})"
    return Target(client, f"{where} (project {project_id})", project_id or "", local=False)
