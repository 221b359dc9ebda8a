"""A real Glance (from PyPI) on 127.0.0.1, sqlite + file store: the embedded default target, and the image
service of the local test cloud.

Two ways to authenticate:
- "trusted" (the zero-setup default): identity comes from request headers (the keystone paste pipeline
  minus authtoken), so images get a real owner project and Glance's RBAC applies without Keystone. Only
  safe on loopback, the only address it binds to.
- "keystone": Glance's own keystone pipeline (keystonemiddleware's auth_token) against a Keystone, exactly
  as in production; see localcloud.py.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import urllib.parse
from pathlib import Path

from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.glance.server import HOST, LoopbackServer, ServerStatus, ServiceUser, venv_tool

DEFAULT_PORT = 19292  # not 9292, so a developer's own Glance is never mistaken for ours
LOCAL_PROJECT = "bakery-local"
LOCAL_USER = "bakery"
GlanceStatus = ServerStatus

GLANCE_API_CONF = """\
[DEFAULT]
bind_host = {host}
enabled_backends = local:file
log_file = {root}/glance-api.log
enabled_import_methods = [glance-direct]
image_size_cap = 1099511627776
[database]
# timeout: a writer waits up to 60 s for sqlite's lock instead of failing after pysqlite's 5 s; an import
# task's thread and the API's request both write, and concurrent imports otherwise die "database is locked"
connection = sqlite:///{root}/glance.sqlite?timeout=60
[glance_store]
default_backend = local
[local]
filesystem_store_datadir = {root}/images
[os_glance_staging_store]
filesystem_store_datadir = {root}/staging
[os_glance_tasks_store]
filesystem_store_datadir = {root}/tasks
[paste_deploy]
flavor = {flavor}
config_file = {paste}
[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
[image_format]
require_image_format_match = false
"""

# The test cloud's Glance publishes every way a production cloud may: two file stores (a cloud with a Ceph
# pool per site, in miniature), the interoperable import methods, and the image_conversion plugin that turns
# a staged qcow2 into the raw image that is stored. web-download may fetch from loopback (only here).
MULTISTORE_IMPORT = """\
[DEFAULT]
enabled_backends = fast:file, cheap:file
enabled_import_methods = [glance-direct,web-download,copy-image]
worker_self_reference_url = {url}
[glance_store]
default_backend = fast
[fast]
filesystem_store_datadir = {root}/images
[cheap]
filesystem_store_datadir = {root}/images-cheap
[image_import_opts]
image_import_plugins = ['image_conversion']
[image_conversion]
output_format = raw
[image_format]
require_image_format_match = true
[import_filtering_opts]
allowed_schemes = [http]
allowed_hosts = [127.0.0.1]
allowed_ports = []
disallowed_ports = []
"""

# The keystone pipeline of glance's sample paste file without authtoken: `context` trusts X-* headers.
GLANCE_API_PASTE = """\
[composite:glance-api-trusted]
paste.composite_factory = glance.api:root_app_factory
/: api
/healthcheck: healthcheck

[composite:api]
paste.composite_factory = glance.api:pipeline_factory
trusted = http_proxy_to_wsgi versionnegotiation context rootapp

[composite:rootapp]
paste.composite_factory = glance.api:root_app_factory
/: apiversions
/v2: apiv2app

[app:apiversions]
paste.app_factory = glance.api.versions:create_resource

[app:apiv2app]
paste.app_factory = glance.api.v2.router:API.factory

[app:healthcheck]
paste.app_factory = oslo_middleware:Healthcheck.app_factory
backends = disable_by_file
disable_by_file_path = {root}/healthcheck_disable

[filter:versionnegotiation]
paste.filter_factory = glance.api.middleware.version_negotiation:VersionNegotiationFilter.factory

[filter:context]
paste.filter_factory = glance.api.middleware.context:ContextMiddleware.factory

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware:HTTPProxyToWSGI.factory
"""


class LocalGlance(LoopbackServer):
    name = "Glance"
    application = "glance.wsgi.api:application"
    health_path = "/healthcheck"

    def __init__(self, root: Path | None = None, port: int | None = None, *, keystone: ServiceUser | None = None):
        super().__init__(root or state_dir() / "glance", port or int(os.environ.get("BAKERY_GLANCE_PORT", DEFAULT_PORT)))
        self.keystone = keystone
        # The keystone pipeline has no /healthcheck: its version document answers without a token.
        self.health_path = "/versions" if keystone else "/healthcheck"

    def port_variable(self) -> str:
        return "BAKERY_GLANCE_PORT"

    def environment(self) -> dict[str, str]:
        return {"OS_GLANCE_CONFIG_DIR": str(self.root / "etc")}

    def extra_log(self) -> Path:
        return self.root / "glance-api.log"

    def prepare(self) -> None:
        for sub in ("etc", "images", "staging", "tasks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.keystone:
            paste = Path(sys.prefix) / "etc/glance/glance-api-paste.ini"
            conf = _merged(GLANCE_API_CONF.format(root=self.root, host=HOST, flavor="keystone", paste=paste),
                           MULTISTORE_IMPORT.format(root=self.root, url=self.url))
            conf += self.keystone.authtoken_section("image")
            (self.root / "images-cheap").mkdir(exist_ok=True)
        else:
            (self.root / "etc/glance-api-paste.ini").write_text(GLANCE_API_PASTE.format(root=self.root))
            conf = GLANCE_API_CONF.format(root=self.root, host=HOST, flavor="trusted", paste=self.root / "etc/glance-api-paste.ini")
        conf_file = self.root / "etc/glance-api.conf"
        conf_file.write_text(conf)
        conf_file.chmod(0o600)  # it may hold the service user's password
        if not (self.root / "glance.sqlite").exists():
            run([venv_tool("glance-manage"), "--config-file", conf_file, "db_sync"], timeout=300)
        else:
            self.remove_orphan_files()

    def remove_orphan_files(self) -> list[Path]:
        """Files in the store that no image references: what a server killed mid-upload leaves behind.

        Glance writes the data file as it receives it; when its worker dies before the image record points
        at it, the file stays forever (4 GB after six killed uploads). The server is not running here, so
        its database is read directly."""
        with sqlite3.connect(self.root / "glance.sqlite") as db:
            rows = db.execute("SELECT value FROM image_locations WHERE deleted = 0").fetchall()
            importing = {image_id for (image_id,) in db.execute("SELECT id FROM images WHERE status = 'uploading' AND deleted = 0")}
        referenced = {Path(urllib.parse.unquote(urllib.parse.urlparse(value).path)).name for (value,) in rows}
        stores = [self.root / name for name in ("images", "images-cheap") if (self.root / name).is_dir()]
        orphans = [p for store in stores for p in store.iterdir() if p.is_file() and p.name not in referenced]
        orphans += [p for p in (self.root / "staging").iterdir() if p.is_file() and p.name not in importing]
        for orphan in orphans:
            orphan.unlink(missing_ok=True)
        if orphans:
            say(f"local Glance: removed {len(orphans)} stored file(s) no image references "
                f"({sum(1 for p in orphans if p.parent.name != 'staging')} in the stores)")
        return orphans


def _merged(base: str, extra: str) -> str:
    """An ini text with `extra`'s options set over `base`'s, section by section (configparser, no interpolation)."""
    import configparser
    import io

    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str
    parser.read_string(base)
    for section, options in _sections(extra).items():
        if section != "DEFAULT" and not parser.has_section(section):
            parser.add_section(section)
        for key, value in options.items():
            parser.set(section, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def _sections(text: str) -> dict[str, dict[str, str]]:
    import configparser

    parser = configparser.RawConfigParser(strict=False, default_section="__none__")
    parser.optionxform = str
    parser.read_string(text)
    return {section: dict(parser.items(section)) for section in parser.sections()}
