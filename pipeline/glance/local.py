"""The embedded default target: a real Glance (from PyPI) on 127.0.0.1, sqlite + file store.

Identity comes from trusted request headers (the keystone paste pipeline minus authtoken), so images get a
real owner project and Glance's RBAC applies, without running Keystone. That is only safe on loopback,
which is the only address the server binds to.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from pipeline.common.errors import BakeryError
from pipeline.common.paths import state_dir
from pipeline.common.run import run

HOST = "127.0.0.1"
DEFAULT_PORT = 19292  # not 9292, so a developer's own Glance is never mistaken for ours
LOCAL_PROJECT = "bakery-local"
LOCAL_USER = "bakery"
# sqlite takes one writer at a time: Glance must run one process, one thread (requests queue).
GUNICORN_ARGS = ["--workers", "1", "--worker-class", "sync", "--timeout", "3600", "--no-control-socket"]

GLANCE_API_CONF = """\
[DEFAULT]
bind_host = {host}
enabled_backends = local:file
log_file = {root}/glance-api.log
enabled_import_methods = [glance-direct]
image_size_cap = 1099511627776
[database]
connection = sqlite:///{root}/glance.sqlite
[glance_store]
default_backend = local
[local]
filesystem_store_datadir = {root}/images
[os_glance_staging_store]
filesystem_store_datadir = {root}/staging
[os_glance_tasks_store]
filesystem_store_datadir = {root}/tasks
[paste_deploy]
flavor = trusted
config_file = {root}/etc/glance-api-paste.ini
[oslo_policy]
enforce_new_defaults = true
enforce_scope = false
[image_format]
require_image_format_match = false
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


@dataclass(frozen=True)
class GlanceStatus:
    url: str
    running: bool
    healthy: bool
    pid: int | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


class LocalGlance:
    def __init__(self, root: Path | None = None, port: int | None = None):
        self.root = (root or state_dir() / "glance").resolve()
        self.port = port or int(os.environ.get("BAKERY_GLANCE_PORT", DEFAULT_PORT))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "gunicorn.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "gunicorn.log"

    # -- status ---------------------------------------------------------------------------------------

    def status(self) -> GlanceStatus:
        pid = self._read_pid()
        if pid is None:
            return GlanceStatus(self.url, False, False, None, f"local Glance is not running (state in {self.root})")
        if not _alive(pid):
            return GlanceStatus(self.url, False, False, pid, f"stale pid file {self.pid_file}: process {pid} is gone")
        if self._healthy():
            return GlanceStatus(self.url, True, True, pid, f"local Glance is up at {self.url} (pid {pid})")
        return GlanceStatus(self.url, True, False, pid, f"process {pid} runs but {self.url}/healthcheck does not answer; see {self.log_file}")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- up / down ------------------------------------------------------------------------------------

    def up(self, *, timeout: float = 60.0) -> GlanceStatus:
        current = self.status()
        if current.healthy:
            return current
        if current.running:
            return self._wait_healthy(current.pid, timeout)
        if current.pid is not None:
            self.pid_file.unlink(missing_ok=True)  # stale: the process is gone
        self._check_port_free()
        self._write_config()
        if not (self.root / "glance.sqlite").exists():
            run([_venv_tool("glance-manage"), "--config-file", self.root / "etc/glance-api.conf", "db_sync"], timeout=300)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [_venv_tool("gunicorn"), "--bind", f"{HOST}:{self.port}", *GUNICORN_ARGS, "glance.wsgi.api:application"],
                env={**_clean_env(), "OS_GLANCE_CONFIG_DIR": str(self.root / "etc")},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # survives the invoke task; glance-down stops it
                cwd=self.root,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return self._wait_healthy(proc.pid, timeout, proc=proc)

    def down(self, *, timeout: float = 15.0) -> GlanceStatus:
        pid = self._read_pid()
        if pid is not None and _alive(pid):
            _signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return GlanceStatus(self.url, False, False, None, f"local Glance stopped (data kept in {self.root})")

    def _wait_healthy(self, pid: int, timeout: float, proc: subprocess.Popen | None = None) -> GlanceStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._healthy():
                return GlanceStatus(self.url, True, True, pid, f"local Glance is up at {self.url} (pid {pid})")
            exited = proc.poll() is not None if proc else not _alive(pid)
            if exited:
                self.pid_file.unlink(missing_ok=True)
                raise BakeryError(f"local Glance exited during start-up: {self._last_log_line()}", hint=f"full log: {self.log_file}")
            time.sleep(0.2)
        raise BakeryError(f"local Glance (pid {pid}) did not answer {self.url}/healthcheck within {timeout:.0f} s", hint=f"see {self.log_file}")

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BakeryError(
                        f"port {self.port} on {HOST} is in use by another process, so the local Glance cannot start",
                        hint="stop that process or set BAKERY_GLANCE_PORT to a free port",
                    ) from None
                raise

    def _write_config(self) -> None:
        for sub in ("etc", "images", "staging", "tasks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/glance-api.conf").write_text(GLANCE_API_CONF.format(root=self.root, host=HOST))
        (self.root / "etc/glance-api-paste.ini").write_text(GLANCE_API_PASTE.format(root=self.root))

    def _last_log_line(self) -> str:
        for name in (self.log_file, self.root / "glance-api.log"):
            try:
                lines = [ln for ln in name.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            errors = [ln for ln in lines if "Error" in ln or "ERROR" in ln]
            if errors or lines:
                return (errors or lines)[-1].strip()
        return "no log output"


def _venv_tool(name: str) -> str:
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        raise BakeryError(f"{name} is not installed next to {sys.executable}", hint="run `make deps` (glance and gunicorn are dependencies of this project)")
    return str(tool)


def _clean_env() -> dict[str, str]:
    """The server needs no credentials of ours: pass it an environment without OS_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
