"""One OpenStack service from PyPI served by gunicorn on 127.0.0.1: config, start, health, stop.

The local Glance (the zero-setup default) and the local Keystone (the real authentication path) are both
this: a WSGI application in a process group of its own, a pid file, a log, and a health URL that says when
it answers. Loopback only: the trusted-headers Glance must never be reachable from another machine.
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

HOST = "127.0.0.1"
# One process, one thread: Keystone keeps its data in sqlite, which takes one writer at a time, and its
# requests are short. Glance overrides this (LocalGlance.gunicorn_args).
GUNICORN_ARGS = ["--workers", "1", "--worker-class", "sync", "--timeout", "3600", "--no-control-socket"]


@dataclass(frozen=True)
class ServiceUser:
    """A service's own Keystone user, with which its auth_token middleware validates the tokens it is sent."""

    auth_url: str
    username: str
    password: str

    def authtoken_section(self, service_type: str) -> str:
        return (f"[keystone_authtoken]\nwww_authenticate_uri = {self.auth_url}\nauth_url = {self.auth_url}\nauth_type = password\n"
                f"project_domain_id = default\nuser_domain_id = default\nproject_name = service\n"
                f"username = {self.username}\npassword = {self.password}\nservice_type = {service_type}\n")


@dataclass(frozen=True)
class ServerStatus:
    url: str
    running: bool
    healthy: bool
    pid: int | None
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


class LoopbackServer:
    """Subclasses say what to serve (`application`, `environment`), how to prepare (`prepare`) and where
    it answers when healthy (`health_path`)."""

    name = "server"
    application = ""
    health_path = "/"

    def __init__(self, root: Path, port: int):
        self.root = Path(root).resolve()
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.root / "gunicorn.pid"

    @property
    def port_file(self) -> Path:
        """The port the running process was started on: the same state directory may be asked for another one."""
        return self.root / "gunicorn.port"

    @property
    def log_file(self) -> Path:
        return self.root / "gunicorn.log"

    def gunicorn_args(self) -> list[str]:
        return list(GUNICORN_ARGS)

    def prepare(self) -> None:
        """Write the configuration and create the database (before the process starts)."""

    def environment(self) -> dict[str, str]:
        return {}

    def extra_log(self) -> Path | None:
        return None

    # -- status ---------------------------------------------------------------------------------------

    def status(self) -> ServerStatus:
        pid = self._read_pid()
        if pid is None:
            return ServerStatus(self.url, False, False, None, f"local {self.name} is not running (state in {self.root})")
        if not alive(pid):
            return ServerStatus(self.url, False, False, pid, f"stale pid file {self.pid_file}: process {pid} is gone")
        elsewhere = self._started_on()
        if elsewhere not in (None, self.port):
            return ServerStatus(self.url, True, False, pid, f"local {self.name} of {self.root} runs on port {elsewhere} (pid {pid}), "
                                f"not on {self.port}: stop it first, or ask for port {elsewhere}")
        if self.healthy():
            return ServerStatus(self.url, True, True, pid, f"local {self.name} is up at {self.url} (pid {pid})")
        return ServerStatus(self.url, True, False, pid, f"process {pid} runs but {self.url}{self.health_path} does not answer; "
                            f"see {self.log_file}")

    def running(self) -> bool:
        return self.status().running

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}{self.health_path}", timeout=2).status_code < 400
        except requests.RequestException:
            return False

    def _started_on(self) -> int | None:
        try:
            return int(self.port_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    # -- up / down ------------------------------------------------------------------------------------

    def up(self, *, timeout: float = 60.0) -> ServerStatus:
        current = self.status()
        if current.healthy:
            return current
        if current.running:
            if self._started_on() not in (None, self.port):
                raise BakeryError(current.message)
            return self._wait_healthy(current.pid, timeout)
        if current.pid is not None:
            self.pid_file.unlink(missing_ok=True)  # stale: the process is gone
        self._stop_orphans()
        self._check_port_free()
        self.root.mkdir(parents=True, exist_ok=True)
        self.prepare()
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(
                [venv_tool("gunicorn"), "--bind", f"{HOST}:{self.port}", *self.gunicorn_args(), self.application],
                env={**clean_env(), **self.environment()},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # survives the invoke task; down() stops it
                cwd=self.root,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self.port_file.write_text(f"{self.port}\n")
        return self._wait_healthy(proc.pid, timeout, proc=proc)

    def down(self, *, timeout: float = 15.0) -> ServerStatus:
        pid = self._read_pid()
        if pid is not None and alive(pid):
            signal_group(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                signal_group(pid, signal.SIGKILL)
        self._stop_orphans()
        self.pid_file.unlink(missing_ok=True)
        self.port_file.unlink(missing_ok=True)
        return ServerStatus(self.url, False, False, None, f"local {self.name} stopped (data kept in {self.root})")

    def orphans(self) -> list[int]:
        """Processes of this server left without their master (a SIGKILLed master leaves its workers holding the
        port until their own timeout): known by their working directory, this server's state directory, which
        every process of it inherits and nothing else uses; not by a process name."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == self.root:
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
        return found

    def _stop_orphans(self, grace_s: float = 5.0) -> None:
        orphans = self.orphans()
        for pid in orphans:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while any(alive(pid) for pid in orphans) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in orphans:
            if alive(pid):
                _signal(pid, signal.SIGKILL)

    def _wait_healthy(self, pid: int, timeout: float, proc: subprocess.Popen | None = None) -> ServerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return ServerStatus(self.url, True, True, pid, f"local {self.name} is up at {self.url} (pid {pid})")
            exited = proc.poll() is not None if proc else not alive(pid)
            if exited:
                self.pid_file.unlink(missing_ok=True)
                raise BakeryError(f"local {self.name} exited during start-up: {self._last_log_line()}", hint=f"full log: {self.log_file}")
            time.sleep(0.2)
        raise BakeryError(f"local {self.name} (pid {pid}) did not answer {self.url}{self.health_path} within {timeout:.0f} s",
                          hint=f"see {self.log_file}")

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BakeryError(
                        f"port {self.port} on {HOST} is in use by another process, so the local {self.name} cannot start",
                        hint=f"stop that process or choose another port ({self.port_variable()})",
                    ) from None
                raise

    def port_variable(self) -> str:
        return "a free port"

    def _last_log_line(self) -> str:
        for name in filter(None, (self.log_file, self.extra_log())):
            try:
                lines = [ln for ln in name.read_text(errors="replace").splitlines() if ln.strip()]
            except OSError:
                continue
            errors = [ln for ln in lines if "Error" in ln or "ERROR" in ln]
            if errors or lines:
                return (errors or lines)[-1].strip()
        return "no log output"


def venv_tool(name: str) -> str:
    tool = Path(sys.executable).parent / name
    if not tool.exists():
        raise BakeryError(f"{name} is not installed next to {sys.executable}", hint="run `make deps`")
    return str(tool)


def clean_env() -> dict[str, str]:
    """A server needs no credentials of ours: pass it an environment without OS_* variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OS_")}


def alive(pid: int) -> bool:
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


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
