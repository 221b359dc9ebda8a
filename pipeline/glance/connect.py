"""Which Glance a task talks to, and how it authenticates.

With no cloud configured (no --cloud, no OS_CLOUD, no OS_AUTH_URL) the target is the local Glance, started
if needed. Otherwise clouds.yaml / OS_* variables are read by openstacksdk's config loader, the way every
OpenStack client does, and its keystoneauth1 session is handed to python-glanceclient.

What the production path adds on top of the loader: a timeout on every request (a Keystone that accepts
connections and never answers must not hang a CI job), a wall-clock limit on authentication as a whole,
an error line per kind of failure with the hint that fits it, retries of transient errors on calls that are
safe to repeat, and tokens renewed before they expire rather than on every call when tokens are short.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

import requests
from glanceclient import Client as GlanceClient
from keystoneauth1 import exceptions as ksa_exceptions
from keystoneauth1 import plugin, session

from pipeline.common import secrets
from pipeline.common.deadline import DeadlineExpired, deadline
from pipeline.common.errors import BakeryError
from pipeline.glance.errors import remember_target
from pipeline.glance.local import LOCAL_PROJECT, LOCAL_USER, LocalGlance

DEFAULT_API_TIMEOUT_S = 60.0  # per request (connect, and each wait for bytes); clouds.yaml's api_timeout wins
AUTH_DEADLINE_FACTOR = 3  # authentication and discovery as a whole, in request timeouts
RETRIES = {"connect_retries": 3, "status_code_retries": 3, "retriable_status_codes": [502, 503, 504]}


@dataclass
class Target:
    glance: Any  # glanceclient.v2.client.Client for metadata calls: transient errors are retried
    description: str
    project_id: str
    local: bool
    uploader: Any = None  # the client that sends image data: never retried by the transport (the body is read once)
    identity: str = ""  # what identifies the target whatever the cloud is called: auth URL, region, project
    name: str = "local"
    roles: tuple[str, ...] = field(default_factory=tuple)
    # the authenticated session and where its catalog is read (interface, region): other services of the
    # same cloud (Nova, Cinder) are asked through it. None for the trusted-headers local Glance, which has no catalog.
    session: Any = None
    endpoint_filter: dict = field(default_factory=dict)
    local_server: Any = None  # the LocalGlance behind a local target: its file store can be checked for strays

    def __post_init__(self) -> None:
        self.uploader = self.uploader or self.glance
        self.identity = self.identity or _identity(self.description, self.project_id)

    def to_dict(self) -> dict:
        return {"description": self.description, "project_id": self.project_id, "local": self.local, "name": self.name,
                "identity": self.identity, "roles": list(self.roles)}


def _identity(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


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
    target = connect_local(start=start_local) if not cloud_configured(cloud) else _connect_cloud(cloud)
    remember_target(target.description)
    return target


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
    glance.remove_orphan_files(running=True)  # what killed uploads left, cleaned at the next run, not the next restart
    auth = TrustedHeaders(glance.url, project_id, LOCAL_USER, roles)
    sess = session.Session(auth=auth, timeout=DEFAULT_API_TIMEOUT_S)
    return Target(GlanceClient("2", session=sess, **RETRIES), f"local Glance {glance.url} (project {project_id})", project_id,
                  local=True, uploader=GlanceClient("2", session=sess), identity=_identity("local", glance.url, project_id),
                  name="local", roles=roles, local_server=glance)


def _connect_cloud(cloud: str | None) -> Target:
    from openstack import exceptions as sdk_exceptions
    from openstack.config import loader

    name = cloud or os.environ.get("OS_CLOUD") or "envvars"
    try:
        region = loader.OpenStackConfig(load_envvars=True).get_one(cloud=cloud)
    except (sdk_exceptions.ConfigException, ksa_exceptions.ClientException) as exc:
        raise BakeryError(f"cloud {name!r}: {secrets.redact(str(exc))}", hint="check clouds.yaml or the OS_* variables") from None
    secrets.register_mapping(region.config)
    auth_url = region.config.get("auth", {}).get("auth_url", "no auth_url")
    timeout = float(region.config.get("api_timeout") or DEFAULT_API_TIMEOUT_S)
    where = f"cloud {region.name!r} ({auth_url}, region {region.get_region_name('image') or 'default'})"
    try:
        with deadline(timeout * AUTH_DEADLINE_FACTOR):
            _discoverable(auth_url, timeout, where)
            sess = region.get_session()
            sess.timeout = timeout
            access = sess.auth.get_access(sess)
            _renew_before_expiry(sess.auth, access)
            endpoint = region.get_endpoint("image") or sess.get_endpoint(service_type="image", interface=region.get_interface(),
                                                                          region_name=region.get_region_name("image"))
            _reachable(sess, endpoint, where)
    except DeadlineExpired:
        raise BakeryError(f"{where}: authentication did not finish within {timeout * AUTH_DEADLINE_FACTOR:.0f} s",
                          hint="Keystone accepts connections but does not answer; check it, or raise api_timeout in clouds.yaml") from None
    except ksa_exceptions.ClientException as exc:
        raise auth_error(where, exc, timeout) from None
    if not endpoint:
        raise BakeryError(f"{where}: the catalog has no image endpoint", hint="check region_name and that Glance is registered")
    options = {"service_type": "image", "interface": region.get_interface(), "region_name": region.get_region_name("image"),
               "endpoint_override": endpoint}
    return Target(GlanceClient("2", session=sess, **options, **RETRIES), f"{where} (project {access.project_id})",
                  access.project_id or "", local=False, uploader=GlanceClient("2", session=sess, **options),
                  # the image endpoint too: two Glances behind one Keystone share no probe memo or journal
                  identity=_identity(auth_url, region.get_region_name("image") or "", access.project_id or "", endpoint),
                  name=region.name, roles=tuple(access.role_names or ()), session=sess,
                  endpoint_filter={"interface": region.get_interface(), "region_name": region.get_region_name("image")})


def _discoverable(auth_url: str, timeout: float, where: str) -> None:
    """Keystone's version document answers without credentials. An auth_url that answers 401 to it instead
    (a proxy wanting its own authentication, a service that is not Keystone) locks keystoneauth's generic
    plugins up in a loop of re-authentication during version discovery: say so at once instead."""
    if "://" not in auth_url:
        return
    try:
        answer = requests.get(auth_url, timeout=timeout, allow_redirects=True)
    except requests.Timeout:
        raise BakeryError(f"{where}: Keystone did not answer within {timeout:.0f} s",
                          hint="check auth_url and the network; api_timeout in clouds.yaml sets the limit") from None
    except requests.ConnectionError:
        raise BakeryError(f"{where}: cannot reach Keystone (connection refused or no route)",
                          hint="check auth_url and the network; the credentials were not tried") from None
    if answer.status_code in (401, 403):
        raise BakeryError(f"{where}: authentication failed (HTTP {answer.status_code} to Keystone's version discovery, "
                          "which needs no credentials)",
                          hint="auth_url does not point at Keystone's public endpoint, or something in front of it wants "
                               "its own authentication")


def _renew_before_expiry(auth, access) -> None:
    """keystoneauth renews a token that expires within 120 s: with short-lived tokens that is every call
    (95 logins for one publish). Renew at a quarter of the token's life instead, at most 120 s before."""
    if access.expires and access.issued:
        lifetime = (access.expires - access.issued).total_seconds()
        auth.MIN_TOKEN_LIFE_SECONDS = max(1, min(120, int(lifetime / 4)))


def _reachable(sess: session.Session, endpoint: str, where: str) -> None:
    """Glance's version document answers without a token: a refused or silent endpoint fails here, in one
    line, instead of halfway through a publish."""
    try:
        sess.get(endpoint.rstrip("/") + "/versions", authenticated=False, raise_exc=False)
    except ksa_exceptions.ConnectFailure:
        raise BakeryError(f"{where}: cannot reach Glance at {endpoint} (connection refused)",
                          hint="the catalog's image endpoint is down or wrong; authentication itself worked") from None
    except (ksa_exceptions.ConnectTimeout, ksa_exceptions.RequestTimeout):
        raise BakeryError(f"{where}: Glance at {endpoint} did not answer in time",
                          hint="the catalog's image endpoint is down or overloaded; authentication itself worked") from None


def auth_error(where: str, exc: ksa_exceptions.ClientException, timeout: float) -> BakeryError:
    """One line per kind of failure, with the hint that fits it (a refused connection is not a bad password)."""
    detail = secrets.redact(" ".join(str(exc).split()))
    if isinstance(exc, ksa_exceptions.Unauthorized):
        return BakeryError(f"{where}: authentication failed (HTTP 401: the credentials were refused)",
                           hint="check the password, or the application credential's id and secret; an application "
                                "credential may have expired or been deleted")
    if isinstance(exc, (ksa_exceptions.ConnectTimeout, ksa_exceptions.RequestTimeout)):
        return BakeryError(f"{where}: Keystone did not answer within {timeout:.0f} s",
                           hint="check auth_url and the network; api_timeout in clouds.yaml sets the limit")
    if isinstance(exc, ksa_exceptions.ConnectFailure):
        return BakeryError(f"{where}: cannot reach Keystone (connection refused or no route)",
                           hint="check auth_url and the network; the credentials were not tried")
    if isinstance(exc, ksa_exceptions.EndpointNotFound):
        return BakeryError(f"{where}: the catalog has no image endpoint", hint="check region_name and that Glance is registered")
    if isinstance(exc, ksa_exceptions.Forbidden):
        return BakeryError(f"{where}: Keystone refused the request (HTTP 403): {detail}",
                           hint="the account may lack a role in the project, or the project is disabled")
    return BakeryError(f"{where}: {type(exc).__name__}: {detail}", hint="check clouds.yaml or the OS_* variables")
