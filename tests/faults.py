"""Real faults for tests: kill the server at a chosen moment, corrupt bytes on the wire."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path


def when_upload_reaches(store: Path, size: int, action: Callable[[], None], *, timeout: float = 60) -> threading.Thread:
    """Run `action` once a file new in Glance's file store has grown past `size` bytes (thread.fired tells)."""
    existing = set(store.glob("*"))

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in set(store.glob("*")) - existing:
                try:
                    if path.stat().st_size >= size:
                        action()
                        thread.fired.set()
                        return
                except FileNotFoundError:
                    continue
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.fired = threading.Event()
    thread.start()
    return thread


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def kill_worker(master_pid: int) -> None:
    """SIGKILL gunicorn's worker: the master respawns it, as a supervisor restarts a crashed server."""
    for pid in worker_pids(master_pid):
        os.kill(pid, signal.SIGKILL)


def kill_server(master_pid: int) -> None:
    os.killpg(master_pid, signal.SIGKILL)


class CorruptingProxy:
    """A TCP proxy on loopback that flips one byte of the first upload body passing through it."""

    def __init__(self, upstream_port: int, *, flip_at: int):
        self.upstream_port = upstream_port
        self.flip_at = flip_at
        self.flipped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, upstream_bound: bool) -> None:
        seen = 0
        is_upload = None
        try:
            while data := source.recv(65536):
                if upstream_bound and is_upload is None:
                    is_upload = data.startswith(b"PUT ")
                if is_upload and not self.flipped.is_set() and seen <= self.flip_at < seen + len(data):
                    index = self.flip_at - seen
                    data = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
                    self.flipped.set()
                seen += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
