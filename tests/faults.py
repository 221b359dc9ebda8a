"""Real faults for tests: kill the server at a chosen moment, corrupt bytes on the wire."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def when_upload_reaches(store: Path, size: int, action: Callable[[], None], *, timeout: float = 60, times: int = 1) -> threading.Thread:
    """Run `action` each time a file new in Glance's file store has grown past `size` bytes, up to `times`
    files (thread.fired is set after the first, thread.count says how many)."""
    existing = set(store.glob("*"))

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and thread.count < times:
            for path in set(store.glob("*")) - existing:
                try:
                    if path.stat().st_size >= size:
                        existing.add(path)
                        action()
                        thread.count += 1
                        thread.fired.set()
                        break
                except FileNotFoundError:
                    continue
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.fired = threading.Event()
    thread.count = 0
    thread.start()
    return thread


@contextmanager
def held_upload(uploader, image_id: str, *, hold: float) -> Iterator[threading.Thread]:
    """Upload two 64 KiB chunks to `image_id`, holding the request open on the server after the first until the
    block ends (or `hold` seconds pass). Yields the uploading thread once the first chunk is on its way."""
    release, started = threading.Event(), threading.Event()

    class HeldBody:
        def __init__(self) -> None:
            self.chunks = [b"\0" * 65536, b"\1" * 65536]

        def read(self, size: int = -1) -> bytes:
            if len(self.chunks) == 1:
                started.set()
                release.wait(hold)
            return self.chunks.pop(0) if self.chunks else b""

    thread = threading.Thread(target=lambda: uploader.images.upload(image_id, HeldBody()), daemon=True)
    thread.start()
    try:
        if not started.wait(120):
            raise AssertionError("the held upload never started")
        yield thread
    finally:
        release.set()
        thread.join(120)


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def kill_worker(master_pid: int) -> None:
    """SIGKILL gunicorn's worker: the master respawns it, as a supervisor restarts a crashed server."""
    for pid in worker_pids(master_pid):
        os.kill(pid, signal.SIGKILL)


def kill_server(master_pid: int) -> None:
    os.killpg(master_pid, signal.SIGKILL)


class _Proxy:
    """A TCP proxy on loopback in front of `upstream_port`. Each connection is relayed both ways; a subclass
    changes what passes towards the server (`_relay_upstream`, one call per connection) or takes the
    connection over (`_serve`)."""

    chunk = 65536

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream, self._relay_upstream(), self.chunk)

    def _relay_upstream(self) -> Callable[[bytes], bytes]:
        return lambda data: data


class CorruptingProxy(_Proxy):
    """A TCP proxy on loopback that flips one byte of the first upload body passing through it."""

    def __init__(self, upstream_port: int, *, flip_at: int):
        self.flip_at = flip_at
        self.flipped = threading.Event()
        super().__init__(upstream_port)

    def _relay_upstream(self) -> Callable[[bytes], bytes]:
        seen, is_upload = 0, None

        def flip(data: bytes) -> bytes:
            nonlocal seen, is_upload
            # a kept-alive connection carries several requests: each one's head starts a new count
            # (clients send the head on its own, so a body chunk never starts with a method here)
            if data[:7] in (b"PUT /v2", b"GET /v2", b"PATCH /", b"POST /v", b"DELETE ", b"HEAD /v") or is_upload is None:
                is_upload, seen = data.startswith(b"PUT "), 0
            if is_upload and not self.flipped.is_set() and seen <= self.flip_at < seen + len(data):
                index = self.flip_at - seen
                data = data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]
                self.flipped.set()
            seen += len(data)
            return data

        return flip


class SilentServer:
    """Accepts connections and never answers: a hung Keystone or Glance."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)

    def close(self) -> None:
        self.listener.close()
        for connection in self.connections:
            connection.close()


class ThrottlingProxy(_Proxy):
    """A TCP proxy on loopback that sends at most `rate` bytes/s towards the server (a slow uplink), and
    counts the requests whose first line contains `count`."""

    def __init__(self, upstream_port: int, *, rate: int, count: bytes = b""):
        self.rate, self.pattern = rate, count
        self.counted = 0
        self.chunk = max(1, min(65536, rate // 10))
        super().__init__(upstream_port)

    def _relay_upstream(self) -> Callable[[bytes], bytes]:
        def throttle(data: bytes) -> bytes:
            if self.pattern:
                self.counted += data.count(self.pattern)
            time.sleep(len(data) / self.rate)
            return data

        return throttle


class RefusingServer:
    """An HTTP server that answers 401 to every request, version discovery included."""

    def __init__(self):
        import http.server

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self):
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("WWW-Authenticate", 'Keystone uri="http://127.0.0.1/"')
                body = b'{"error": {"code": 401, "message": "The request you have made requires authentication."}}'
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_HEAD = _refuse

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class FlakyProxy(_Proxy):
    """A TCP proxy in front of a one-request-per-connection server that answers the first `fail` GET
    requests itself with 503 Service Unavailable, then passes everything through."""

    def __init__(self, upstream_port: int, *, fail: int):
        self.remaining = fail
        self.injected = 0
        super().__init__(upstream_port)

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if first.startswith(b"GET ") and self.remaining > 0:
            self.remaining -= 1
            self.injected += 1
            client.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        upstream.sendall(first)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)


def _pipe(source: socket.socket, sink: socket.socket, relay: Callable[[bytes], bytes] = lambda data: data,
          chunk: int = 65536) -> None:
    """Copy source to sink through `relay` until either side closes, then shut both down."""
    try:
        while data := source.recv(chunk):
            sink.sendall(relay(data))
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
