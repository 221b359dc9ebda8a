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

import contextlib
import sqlite3
import sys
import time
import urllib.parse
from pathlib import Path

from pipeline.common.paths import state_dir
from pipeline.common.progress import say
from pipeline.common.run import run
from pipeline.common.settings import port_setting
from pipeline.glance.server import HOST, LoopbackServer, ServerStatus, ServiceUser, venv_tool

DEFAULT_PORT = 19292  # not 9292, so a developer's own Glance is never mistaken for ours
LOCAL_PROJECT = "bakery-local"
LOCAL_USER = "bakery"
GlanceStatus = ServerStatus
GLANCE_THREADS = 8
STRAY_QUIET_S = 120.0
ACCESS_FORMAT = '%(p)s %(t)s %(D)s "%(r)s" %(s)s'  # pid, end time, microseconds, request line, status  # a stored file written to this recently may belong to an upload whose record is not saved yet

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
connection = {connection}
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

# gunicorn's configuration (Python, run in the master before it forks its worker): every sqlite transaction
# starts with BEGIN IMMEDIATE. oslo.db opens each one with a plain (deferred) BEGIN, so two threads that both
# read and then write deadlock on the lock upgrade, and sqlite answers the second "database is locked" at
# once, without waiting its busy timeout: a 500 for a publish whose PATCH met another's. IMMEDIATE takes the
# write lock up front, where the busy timeout (60 s) applies, so concurrent requests wait instead of failing.
GUNICORN_CONF = """\
import sqlalchemy
from sqlalchemy.engine import Engine


@sqlalchemy.event.listens_for(Engine, "begin")
def _begin_immediate(conn):
    if conn.dialect.name == "sqlite" and "in_transaction" not in conn.info:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        conn.info["in_transaction"] = True  # oslo.db's own listener then emits no BEGIN of its own
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

# A production Glance of several API workers keeps an image cache that every worker shares: the centralized_db
# driver keeps its records in Glance's own database (the sqlite driver's per-node file is not safe for several
# processes), each entry tagged with the worker_self_reference_url that names this node. Images are cached as
# they are first downloaded (inspect, lint and release-notes --image read them that way) and dropped when
# deleted. Only the production-shaped cloud has it: the default cloud stays one process on sqlite.
IMAGE_CACHE = """\
[DEFAULT]
image_cache_dir = {root}/image-cache
image_cache_driver = centralized_db
image_cache_max_size = 10737418240
[paste_deploy]
flavor = keystone+cachemanagement
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

    def __init__(self, root: Path | None = None, port: int | None = None, *, keystone: ServiceUser | None = None,
                 database_url: str | None = None, workers: int = 1):
        """database_url, workers: the production-shaped cloud's Glance (MariaDB, several processes); the
        default is sqlite and one process (sqlite takes one writer: processes would only fight over it)."""
        super().__init__(root or state_dir() / "glance", port or port_setting(None, "", "BAKERY_GLANCE_PORT", DEFAULT_PORT))
        self.keystone = keystone
        self.database_url = database_url
        self.workers = workers if database_url else 1
        # The keystone pipeline has no /healthcheck: its version document answers without a token.
        self.health_path = "/versions" if keystone else "/healthcheck"

    def port_variable(self) -> str:
        return "BAKERY_GLANCE_PORT"

    def gunicorn_args(self) -> list[str]:
        """One process, several threads: an upload of many minutes holds one thread, and a health check, a
        lifecycle run's listings or a second publisher's PATCH are answered by the others instead of
        queueing behind it (sqlite still takes one writer at a time; its 60 s busy timeout covers that). The
        gthread worker also checks every second that its master is alive, so a SIGKILLed master's worker
        leaves the port at once instead of after the request timeout."""
        access = (["--access-logfile", str(self.access_log), "--access-logformat", ACCESS_FORMAT] if self.database_url else [])
        return ["--config", str(self.root / "etc/gunicorn.conf.py"), "--workers", str(self.workers), "--worker-class", "gthread",
                "--threads", str(GLANCE_THREADS), "--timeout", "3600", "--no-control-socket", *access]

    @property
    def access_log(self) -> Path:
        """Per request: the worker's pid, when it ended, how long it took: where overlapping requests show."""
        return self.root / "access.log"

    def environment(self) -> dict[str, str]:
        return {"OS_GLANCE_CONFIG_DIR": str(self.root / "etc")}

    def extra_log(self) -> Path:
        return self.root / "glance-api.log"

    def prepare(self) -> None:
        for sub in ("etc", "images", "staging", "tasks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.keystone:
            paste = Path(sys.prefix) / "etc/glance/glance-api-paste.ini"
            conf = _merged(GLANCE_API_CONF.format(root=self.root, host=HOST, flavor="keystone", paste=paste, connection=self.connection),
                           MULTISTORE_IMPORT.format(root=self.root, url=self.url))
            if self.database_url:
                conf = _merged(conf, IMAGE_CACHE.format(root=self.root))
            conf += self.keystone.authtoken_section("image")
            (self.root / "images-cheap").mkdir(exist_ok=True)
        else:
            (self.root / "etc/glance-api-paste.ini").write_text(GLANCE_API_PASTE.format(root=self.root))
            conf = GLANCE_API_CONF.format(root=self.root, host=HOST, flavor="trusted", paste=self.root / "etc/glance-api-paste.ini",
                                          connection=self.connection)
        (self.root / "etc/gunicorn.conf.py").write_text(GUNICORN_CONF)
        conf_file = self.root / "etc/glance-api.conf"
        conf_file.write_text(conf)
        conf_file.chmod(0o600)  # it may hold the service user's password
        synced = self.root / ("db-synced" if self.database_url else "glance.sqlite")
        if not synced.exists():
            run([venv_tool("glance-manage"), "--config-file", conf_file, "db_sync"], timeout=900)
            synced.touch()
        else:
            self.remove_orphan_files()  # the server is down: nothing is in flight whatever the records say

    def _query(self, *queries: str) -> list[list[tuple]] | None:
        """Read-only answers from Glance's database, whichever it is; None when it cannot be read now."""
        if self.database_url:
            return _mysql_rows(self.database_url, queries)
        return _sqlite_rows(self.root / "glance.sqlite", queries)

    @property
    def connection(self) -> str:
        return self.database_url or f"sqlite:///{self.root}/glance.sqlite?timeout=60"

    def remove_orphan_files(self, *, running: bool = False) -> list[Path]:
        """Remove the stored files no image accounts for (see stray_files); say how many went."""
        strays = self.stray_files(running=running)
        for stray in strays:
            stray.unlink(missing_ok=True)
        if strays:
            say(f"local Glance: removed {len(strays)} stored file(s) no image references "
                f"({sum(1 for p in strays if p.parent.name != 'staging')} in the stores)")
        return strays

    def stray_files(self, *, running: bool = True) -> list[Path]:
        """Files in the stores or the staging area that no image accounts for: what a worker killed mid-upload
        leaves behind (Glance writes the data file as it receives it; when its worker dies before the image
        record points at it, the file stays: 4 GB after six killed uploads).

        Safe while the server runs: a file is kept while its image is receiving data (saving) or is staged
        (uploading, importing), and so is any file written to in the last STRAY_QUIET_S seconds. With the
        server down nothing is receiving data: only staged files waiting for their import call are kept.
        The database is read directly (sqlite allows a reader next to the server's writer)."""
        statuses = "('saving', 'uploading', 'importing')" if running else "('uploading')"
        queries = ("SELECT value FROM image_locations WHERE deleted = 0",
                   f"SELECT id FROM images WHERE status IN {statuses} AND deleted = 0")
        answers = self._query(*queries)
        if answers is None:
            return []  # unreadable now (busy past the timeout, a schema being migrated): nothing is judged stray
        rows, in_flight = answers[0], {image_id for (image_id,) in answers[1]}
        referenced = {Path(urllib.parse.unquote(urllib.parse.urlparse(value).path)).name for (value,) in rows} | in_flight
        stores = [self.root / name for name in ("images", "images-cheap") if (self.root / name).is_dir()]
        candidates = [p for store in stores for p in store.iterdir() if p.is_file() and p.name not in referenced]
        staging = self.root / "staging"
        candidates += [p for p in (staging.iterdir() if staging.is_dir() else ()) if p.is_file() and p.name not in in_flight]
        now, quiet_s = time.time(), STRAY_QUIET_S if running else 0.0
        return [p for p in candidates if _quiet_since(p, now) >= quiet_s]


def _sqlite_rows(database: Path, queries: tuple[str, ...]) -> list[list[tuple]] | None:
    if not database.exists():
        return None
    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=60)) as db:
            return [db.execute(query).fetchall() for query in queries]
    except sqlite3.Error:
        return None


def _mysql_rows(url: str, queries: tuple[str, ...]) -> list[list[tuple]] | None:
    """The production-shaped cloud's MariaDB, over the socket its URL names (pipeline/glance/mariadb.py)."""
    import pymysql

    parsed = urllib.parse.urlsplit(url)
    socket_path = urllib.parse.parse_qs(parsed.query).get("unix_socket", [None])[0]
    try:
        with contextlib.closing(pymysql.connect(unix_socket=socket_path, user=parsed.username or "root",
                                                database=parsed.path.lstrip("/"), connect_timeout=10)) as db:
            with db.cursor() as cursor:
                answers = []
                for query in queries:
                    cursor.execute(query)
                    answers.append(list(cursor.fetchall()))
                return answers
    except pymysql.MySQLError:
        return None


def _quiet_since(path: Path, now: float) -> float:
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return -1.0  # gone already: nothing to remove


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
