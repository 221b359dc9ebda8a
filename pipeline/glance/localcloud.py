"""A real Keystone-authenticated cloud on loopback: Keystone + a Glance behind keystonemiddleware, and
optionally the Nova and Cinder APIs (consumer_ports), so that "is this image in use" is asked of real ones.

What release engineers actually publish to: a clouds.yaml (password or application credential), tokens from
Keystone, a Glance that validates them and applies its default policies (a member may not publicize).
`invoke cloud-up` starts it for people; the tests of the real path use it through `--cloud` exactly as users
do. The trusted-headers local Glance stays the zero-setup default of `make demo`.

Identities (all in the Default domain):
    admin          project admin          role admin         (keystone-manage bootstrap)
    glance         project service        roles admin, service (Glance's own service user)
    image-builder  project windows-images role member        + an application credential
    other-builder  project other-team     role member        (isolation between projects)
    nova, cinder   project service        roles admin, service (their service users)
clouds.yaml names them bakery-admin, bakery-member, bakery-appcred and bakery-other.
"""

from __future__ import annotations

import contextlib
import json
import secrets as random_secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.settings import port_setting, whole_number
from pipeline.glance.image_consumers import LocalCinder, LocalNova
from pipeline.glance.keystone import REGION, LocalKeystone
from pipeline.glance.local import LocalGlance
from pipeline.glance.mariadb import LocalMariaDB
from pipeline.glance.server import ServerStatus, ServiceUser

DEFAULT_KEYSTONE_PORT = 15000
DEFAULT_GLANCE_PORT = 19293
DEFAULT_CONSUMER_PORTS = (18774, 18776)  # Nova's and Cinder's usual ports, moved out of the way
DEFAULT_MARIADB_PORT = 13306
DEFAULT_TOKEN_LIFETIME = 3600
MAX_TOKEN_LIFETIME = 30 * 24 * 3600
GLANCE_WORKERS = 3  # processes, each with the local Glance's threads: a production API behind a balancer, in small


def token_seconds(value: object | None) -> int:
    """--token-lifetime: seconds a Keystone token lives (a test cloud may want a few, to see tokens expire)."""
    return whole_number(value, "--token-lifetime", low=1, high=MAX_TOKEN_LIFETIME, default=DEFAULT_TOKEN_LIFETIME)


def consumer_ports(nova: int | str | None = None, cinder: int | str | None = None) -> tuple[int, int]:
    """(Nova's, Cinder's) API ports: given, else BAKERY_CLOUD_NOVA_PORT / BAKERY_CLOUD_CINDER_PORT, else the defaults."""
    ports = (port_setting(nova, "--nova-port", "BAKERY_CLOUD_NOVA_PORT", DEFAULT_CONSUMER_PORTS[0]),
             port_setting(cinder, "--cinder-port", "BAKERY_CLOUD_CINDER_PORT", DEFAULT_CONSUMER_PORTS[1]))
    if ports[0] == ports[1]:
        raise BakeryError(f"Nova and Cinder cannot share port {ports[0]}")
    return ports


PROJECT = "windows-images"
OTHER_PROJECT = "other-team"
FLAVOR = {"id": "bakery-windows", "name": "bakery.windows", "ram": 4096, "vcpus": 2, "disk": 40}
CLOUDS = {"bakery-admin": "admin", "bakery-member": "image-builder", "bakery-appcred": "appcred", "bakery-other": "other-builder"}


@dataclass(frozen=True)
class CloudStatus:
    keystone: ServerStatus
    glance: ServerStatus
    clouds_yaml: Path

    @property
    def healthy(self) -> bool:
        return self.keystone.healthy and self.glance.healthy

    @property
    def message(self) -> str:
        if self.healthy:
            return (f"local cloud is up: Keystone {self.keystone.url}/v3, Glance {self.glance.url}; "
                    f"OS_CLIENT_CONFIG_FILE={self.clouds_yaml} with --cloud {' | '.join(CLOUDS)}")
        return f"{self.keystone.message}; {self.glance.message}"

    def to_dict(self) -> dict:
        return {"keystone": self.keystone.to_dict(), "glance": self.glance.to_dict(), "clouds_yaml": str(self.clouds_yaml),
                "clouds": list(CLOUDS)}


class LocalCloud:
    def __init__(self, root: Path | None = None, *, keystone_port: int | None = None, glance_port: int | None = None,
                 token_lifetime: int = DEFAULT_TOKEN_LIFETIME, consumer_ports: tuple[int, int] | None = None,
                 production_shaped: bool | None = None, mariadb_port: int | str | None = None):
        """consumer_ports: (Nova's, Cinder's), to run their APIs too. production_shaped: Keystone and a Glance of
        GLANCE_WORKERS processes on a private MariaDB (remembered in the state directory; None: as it was)."""
        self.root = Path(root or state_dir() / "cloud").resolve()
        marker = self.root / "production-shaped.json"
        if production_shaped is None:
            production_shaped = marker.exists()
        self.mariadb = None
        if production_shaped:
            recorded = json.loads(marker.read_text())["mariadb_port"] if marker.exists() else None
            given = mariadb_port if mariadb_port is not None else recorded
            self.mariadb = LocalMariaDB(self.root / "mariadb",
                                        port_setting(given, "--mariadb-port", "BAKERY_CLOUD_MARIADB_PORT", DEFAULT_MARIADB_PORT))
        self.keystone = LocalKeystone(self.root / "keystone",
                                      keystone_port or port_setting(None, "", "BAKERY_CLOUD_KEYSTONE_PORT", DEFAULT_KEYSTONE_PORT),
                                      token_lifetime=token_lifetime,
                                      database_url=self.mariadb.url("keystone") if self.mariadb else None)
        self.glance_port = glance_port or port_setting(None, "", "BAKERY_CLOUD_GLANCE_PORT", DEFAULT_GLANCE_PORT)
        self.consumer_ports = consumer_ports or self._recorded_consumer_ports()

    @property
    def clouds_yaml(self) -> Path:
        return self.root / "clouds.yaml"

    @property
    def state_file(self) -> Path:
        return self.root / "cloud.json"

    def glance(self) -> LocalGlance:
        state = self._state()
        auth = self._service_user("glance", state) if state else None
        if self.mariadb:
            return LocalGlance(self.root / "glance", self.glance_port, keystone=auth, database_url=self.mariadb.url("glance"),
                               workers=GLANCE_WORKERS)
        return LocalGlance(self.root / "glance", self.glance_port, keystone=auth)

    # -- up / down / status -----------------------------------------------------------------------------

    def consumers(self) -> list[LocalNova | LocalCinder]:
        """The Nova and Cinder APIs, when this cloud runs them."""
        state = self._state()
        if not self.consumer_ports or not state:
            return []
        return [kind(self.root / kind.package, port, service_user=self._service_user(kind.package, state), region=REGION)
                for kind, port in zip((LocalNova, LocalCinder), self.consumer_ports)]

    @property
    def _consumer_ports_file(self) -> Path:
        return self.root / "consumer-ports.json"

    def _recorded_consumer_ports(self) -> tuple[int, int] | None:
        """The ports the consumers were started on, so that status and down find them again."""
        try:
            return tuple(json.loads(self._consumer_ports_file.read_text()))
        except (OSError, ValueError):
            return None

    def _service_user(self, name: str, state: dict) -> ServiceUser:
        return ServiceUser(self.keystone.auth_url, name, state["users"][name]["password"])

    def up(self, *, timeout: float = 120.0) -> CloudStatus:
        """Start what is not running. A start that fails stops what this call started, so a refused setting or a
        taken port leaves the machine as it was, not a Keystone without its Glance."""
        self.root.mkdir(parents=True, exist_ok=True)
        started: list = []
        try:
            if self.mariadb:
                _start(self.mariadb, started, timeout)
                (self.root / "production-shaped.json").write_text(json.dumps({"mariadb_port": self.mariadb.port}))
            _start(self.keystone, started, timeout)
            self._ensure_identities()
            _start(self.glance(), started, timeout)
            if self.consumer_ports:
                self._consumer_ports_file.write_text(json.dumps(list(self.consumer_ports)))
            for consumer in self.consumers():
                _start(consumer, started, timeout)
                if isinstance(consumer, LocalNova):
                    self._ensure_flavor(consumer)
            self._write_clouds_yaml()
        except BaseException:
            for server in reversed(started):
                with contextlib.suppress(Exception):  # the first error is the one to tell
                    server.down()
            raise
        return self.status()

    def down(self) -> CloudStatus:
        for consumer in self.consumers():
            consumer.down()
        self.glance().down()
        self.keystone.down()
        if self.mariadb:
            self.mariadb.down()
        return self.status()

    def status(self) -> CloudStatus:
        return CloudStatus(self.keystone.status(), self.glance().status(), self.clouds_yaml)

    # -- identities -------------------------------------------------------------------------------------

    def admin_session(self) -> ksa_session.Session:
        auth = v3.Password(auth_url=self.keystone.auth_url, username="admin", password=self.keystone.admin_password(),
                           project_name="admin", user_domain_id="default", project_domain_id="default")
        auth.MIN_TOKEN_LIFE_SECONDS = 1  # the cloud may have been started with very short tokens
        return ksa_session.Session(auth=auth, timeout=30)

    def _state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _ensure_identities(self) -> None:
        """Projects, users, roles, the application credential and the catalog; created once, the catalog's
        URLs refreshed every time (the ports may change between runs)."""
        from openstack.connection import Connection

        # The catalog still names the bootstrap's URL until _register_endpoints corrects it.
        identity = Connection(session=self.admin_session(), identity_endpoint_override=self.keystone.auth_url).identity
        state = self._state()
        if state is None:
            state = self._create_identities(identity)
            self.state_file.write_text(json.dumps(state, indent=2) + "\n")
            self.state_file.chmod(0o600)
        self._register_endpoints(identity)

    def _create_identities(self, identity) -> dict:
        roles = {role.name: role for role in identity.roles()}
        for name in ("member", "reader", "service"):
            if name not in roles:
                roles[name] = identity.create_role(name=name)
        users = {}
        for user, project, role_names in (("glance", "service", ("admin", "service")), ("nova", "service", ("admin", "service")),
                                          ("cinder", "service", ("admin", "service")), ("image-builder", PROJECT, ("member", "reader")),
                                          ("other-builder", OTHER_PROJECT, ("member", "reader"))):
            created_project = identity.find_project(project) or identity.create_project(name=project, domain_id="default")
            password = random_secrets.token_urlsafe(18)
            created_user = identity.create_user(name=user, password=password, domain_id="default",
                                                default_project_id=created_project.id)
            for role_name in role_names:
                identity.assign_project_role_to_user(created_project, created_user, roles[role_name])
            users[user] = {"id": created_user.id, "password": password, "project": project, "project_id": created_project.id}
        member = users["image-builder"]
        builder_auth = v3.Password(auth_url=self.keystone.auth_url, username="image-builder", password=member["password"],
                                   project_id=member["project_id"], user_domain_id="default")
        builder_auth.MIN_TOKEN_LIFE_SECONDS = 1
        builder = ksa_session.Session(auth=builder_auth, timeout=30)
        from openstack.connection import Connection

        credential = Connection(session=builder, identity_endpoint_override=self.keystone.auth_url).identity.create_application_credential(
            user=member["id"], name="bakery-ci", description="monthly Windows image publishing")
        return {"users": users, "application_credential": {"id": credential.id, "secret": credential.secret}}

    def _register_endpoints(self, identity) -> None:
        urls = {"identity": self.keystone.auth_url, "image": f"http://127.0.0.1:{self.glance_port}"}
        names = {"identity": "keystone", "image": "glance"}
        for consumer in self.consumers():
            urls[consumer.service_type], names[consumer.service_type] = consumer.endpoint, consumer.package
        for service_type, url in urls.items():
            service = next(iter(identity.services(type=service_type)), None) or identity.create_service(
                name=names[service_type], type=service_type)
            existing = {e.interface: e for e in identity.endpoints(service_id=service.id)}
            for interface in ("public", "internal", "admin"):
                if interface in existing:
                    if existing[interface].url != url:
                        identity.update_endpoint(existing[interface], url=url)
                else:
                    identity.create_endpoint(service_id=service.id, interface=interface, url=url, region_id=REGION)

    def _ensure_flavor(self, nova: LocalNova) -> None:
        """One flavor a Windows image fits, so that servers can be created from the published images."""
        sess = self.admin_session()
        found = sess.get(f"{nova.endpoint}/flavors/{FLAVOR['id']}", raise_exc=False)
        if found.status_code == 404:
            sess.post(f"{nova.endpoint}/flavors", json={"flavor": FLAVOR})

    # -- what clients use ---------------------------------------------------------------------------------

    def _write_clouds_yaml(self) -> None:
        state = self._state()
        common = {"region_name": REGION, "identity_api_version": 3, "interface": "public"}
        clouds = {}
        for cloud, user in CLOUDS.items():
            if user == "appcred":
                credential = state["application_credential"]
                clouds[cloud] = {**common, "auth_type": "v3applicationcredential",
                                 "auth": {"auth_url": self.keystone.auth_url, "application_credential_id": credential["id"],
                                          "application_credential_secret": credential["secret"]}}
                continue
            if user == "admin":
                auth = {"username": "admin", "password": self.keystone.admin_password(), "project_name": "admin"}
            else:
                account = state["users"][user]
                auth = {"username": user, "password": account["password"], "project_name": account["project"]}
            clouds[cloud] = {**common, "auth": {"auth_url": self.keystone.auth_url, "user_domain_name": "Default",
                                                "project_domain_name": "Default", **auth}}
        self.clouds_yaml.write_text(yaml.safe_dump({"clouds": clouds}, sort_keys=False))
        self.clouds_yaml.chmod(0o600)

    def environment(self, cloud: str) -> dict[str, str]:
        """The same account as OS_* variables (what openrc files export), for clients without clouds.yaml."""
        entry = yaml.safe_load(self.clouds_yaml.read_text())["clouds"][cloud]
        variables = {"OS_REGION_NAME": entry["region_name"], "OS_IDENTITY_API_VERSION": "3", "OS_INTERFACE": "public"}
        if entry.get("auth_type"):
            variables["OS_AUTH_TYPE"] = entry["auth_type"]
        variables.update({f"OS_{key.upper()}": str(value) for key, value in entry["auth"].items()})
        return variables


def _start(server, started: list, timeout: float) -> None:
    """Start one server, remembering it in `started` (before it is up: a failed start may leave a process)."""
    if not server.running():
        started.append(server)
    server.up(timeout=timeout)
