"""The services that use images, for the local test cloud: a real Nova API and a real Cinder API (from PyPI)
on 127.0.0.1, with sqlite, Keystone authentication and oslo.messaging's in-process fake transport.

No conductor, scheduler, compute host or volume service runs. A server created through Nova's API is
recorded (a build request) and stays in BUILD, which is what "a server was booted from this image" looks
like to the API; Nova asks Glance for the image through the catalog when the server is created, as in a
real cloud. A volume created through Cinder's API stays in "creating" until an admin resets it; the image
metadata a volume created from an image carries is set through Cinder's own volume action. That is all the
lifecycle's in-use checks read.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from pipeline.common.run import run
from pipeline.glance.server import LoopbackServer, ServiceUser, venv_tool

COMMON_CONF = """\
[DEFAULT]
transport_url = fake:/
state_path = {root}
log_file = {root}/{log}
{default}
[database]
connection = sqlite:///{root}/{database}.sqlite?timeout=60
[oslo_concurrency]
lock_path = {root}/locks
"""


class _ApiService(LoopbackServer):
    """A service's API only: its config (written each start), its paste file (from the package), its
    databases (created once)."""

    package = ""
    service_type = ""  # what its tokens are validated for
    extra_conf = ""  # sections of the service's own
    default_options = ""  # more [DEFAULT] options

    def __init__(self, root: Path, port: int, *, service_user: ServiceUser, region: str):
        super().__init__(root, port)
        self.service_user, self.region = service_user, region

    @property
    def conf(self) -> Path:
        return self.root / "etc" / f"{self.package}.conf"

    def extra_log(self) -> Path:
        return self.root / f"{self.package}-api.log"

    def prepare(self) -> None:
        etc = self.root / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(sys.prefix) / f"etc/{self.package}/api-paste.ini", etc / "api-paste.ini")
        common = COMMON_CONF.format(root=self.root, log=self.extra_log().name, database=self.package,
                                    default=self.default_options.format(root=self.root))
        self.conf.write_text(common + self.extra_conf.format(root=self.root, region=self.region)
                             + self.service_user.authtoken_section(self.service_type))
        self.conf.chmod(0o600)
        if not (self.root / f"{self.package}.sqlite").exists():
            self.create_databases([venv_tool(f"{self.package}-manage"), "--config-file", str(self.conf)])

    def create_databases(self, manage: list[str]) -> None:
        raise NotImplementedError


class LocalNova(_ApiService):
    name = "Nova API"
    package = "nova"
    service_type = "compute"
    application = "pipeline.glance.nova_app:application"
    health_path = "/v2.1"  # the version document answers without a token
    extra_conf = """\
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = {root}/etc/api-paste.ini
[api_database]
connection = sqlite:///{root}/nova_api.sqlite?timeout=60
[quota]
# no placement service: usage is not counted
driver = nova.quota.NoopQuotaDriver
[glance]
region_name = {region}
valid_interfaces = public
"""

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v2.1"

    def environment(self) -> dict[str, str]:
        return {"OS_NOVA_CONFIG_DIR": str(self.root / "etc")}

    def create_databases(self, manage: list[str]) -> None:
        """The API database, cell0 and one cell, as a deployment tool does them (a few seconds each)."""
        run([*manage, "api_db", "sync"], timeout=600)
        run([*manage, "cell_v2", "map_cell0", "--database_connection", f"sqlite:///{self.root}/nova_cell0.sqlite?timeout=60"],
            timeout=600)
        run([*manage, "cell_v2", "create_cell", "--name", "cell1"], timeout=600)
        run([*manage, "db", "sync"], timeout=600)


class LocalCinder(_ApiService):
    name = "Cinder API"
    package = "cinder"
    service_type = "volumev3"
    application = "pipeline.glance.cinder_app:application"
    health_path = "/"  # the versions document answers without a token
    default_options = ("auth_strategy = keystone\napi_paste_config = {root}/etc/api-paste.ini\n"
                       "resource_query_filters_file = {root}/etc/resource_filters.json")

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v3/$(project_id)s"  # Keystone fills in the project of each token

    def environment(self) -> dict[str, str]:
        return {"BAKERY_CINDER_CONF": str(self.conf)}

    def prepare(self) -> None:
        (self.root / "etc").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(sys.prefix) / "etc/cinder/resource_filters.json", self.root / "etc/resource_filters.json")
        super().prepare()

    def create_databases(self, manage: list[str]) -> None:
        run([*manage, "db", "sync"], timeout=600)
