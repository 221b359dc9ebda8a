"""A private MariaDB for the production-shaped local cloud: Debian's mariadb-server binaries, run as a plain
process with its own datadir, socket and port under the cloud's state directory; nothing system-wide (no
service, no /etc/mysql, no /var/lib/mysql).

Keystone and a multi-worker Glance keep their data here as they do in production (MySQL/MariaDB behind
several API workers), so concurrent requests really meet in the database. Clients connect over the unix
socket as root, which mariadb-install-db creates without a password and which nothing outside the state
directory can reach (the directory is the caller's).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from pipeline.common.errors import BakeryError
from pipeline.common.run import run
from pipeline.glance.server import HOST, alive, clean_env

DATABASES = ("keystone", "glance")


class LocalMariaDB:
    def __init__(self, root: Path, port: int):
        self.root = Path(root).resolve()
        self.port = port

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    @property
    def pid_file(self) -> Path:
        return self.root / "mysqld.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "mysqld.log"

    def url(self, database: str) -> str:
        """An SQLAlchemy URL for oslo.db: PyMySQL over the private socket."""
        return f"mysql+pymysql://root@localhost/{database}?unix_socket={self.socket}&charset=utf8mb4"

    def up(self, *, timeout: float = 120.0) -> None:
        if self._answers():
            return
        server, install = shutil.which("mariadbd") or "/usr/sbin/mariadbd", shutil.which("mariadb-install-db")
        if not Path(server).exists() or not install:
            raise BakeryError("the production-shaped cloud needs MariaDB: mariadbd / mariadb-install-db not found",
                              hint="apt-get install mariadb-server (make deps installs it with CI=1)")
        self.root.mkdir(parents=True, exist_ok=True)
        user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root unless told: it is our own datadir
        if not (self.root / "data" / "mysql").is_dir():
            run([install, "--no-defaults", f"--datadir={self.root / 'data'}", "--auth-root-authentication-method=normal",
                 "--skip-test-db", *user], timeout=300)
        with open(self.log_file, "ab") as log:
            subprocess.Popen(
                [server, "--no-defaults", f"--datadir={self.root / 'data'}", f"--socket={self.socket}", f"--port={self.port}",
                 f"--bind-address={HOST}", f"--pid-file={self.pid_file}", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
                 "--max-connections=500", "--innodb-flush-log-at-trx-commit=2", *user],
                env=clean_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=self.root)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if time.monotonic() > deadline:
                raise BakeryError(f"the local MariaDB did not answer on {self.socket} within {timeout:.0f} s", hint=f"see {self.log_file}")
            time.sleep(0.3)
        with self._connect() as connection, connection.cursor() as cursor:
            for database in DATABASES:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS {database} CHARACTER SET utf8mb4")

    def down(self, *, timeout: float = 60.0) -> None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        if alive(pid):
            os.kill(pid, signal.SIGTERM)  # a clean InnoDB shutdown
            deadline = time.monotonic() + timeout
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def running(self) -> bool:
        try:
            return alive(int(self.pid_file.read_text().strip()))
        except (OSError, ValueError):
            return False

    def _connect(self):
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=5, autocommit=True)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            with self._connect():
                return True
        except Exception:  # not up yet: pymysql's errors, or the socket's
            return False
