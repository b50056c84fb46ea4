"""A loopback HTTP server for the zoo tests: static files with Range support, or any route.

Use the ``loopback`` fixture::

    server = loopback.serve_files({"/m.safetensors": blob})        # honours Range
    server = loopback.serve_files(files, honour_range=False)        # always answers 200
    server = loopback.serve(route)  # route(method, path, headers) -> loopback.Reply(...)
    server.url + "/m.safetensors"; server.requests; server.bytes_sent

Everything listens on 127.0.0.1 on a free port and stops when the test ends.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest


@dataclass
class Reply:
    """What a route answers: status, headers and body."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]


Route = Callable[[str, str, dict], Reply]

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


def file_reply(method: str, body: bytes, headers: dict, honour_range: bool = True, extra: dict | None = None) -> Reply:
    """Answer a GET/HEAD for ``body`` as a static file server would, honouring one byte range."""
    base = {"Accept-Ranges": "bytes"} if honour_range else {}
    base.update(extra or {})
    range_header = headers.get("range") if honour_range else None
    if range_header:
        match = _RANGE.match(range_header.strip())
        if not match or match.groups() == ("", ""):
            return Reply(416, headers={**base, "Content-Range": f"bytes */{len(body)}"})
        first, last = match.groups()
        if first == "":  # suffix range: the last N bytes
            start, end = max(0, len(body) - int(last)), len(body) - 1
        else:
            start, end = int(first), min(int(last) if last else len(body) - 1, len(body) - 1)
        if start >= len(body) or start > end:
            return Reply(416, headers={**base, "Content-Range": f"bytes */{len(body)}"})
        part = body[start : end + 1]
        return Reply(206, part if method != "HEAD" else b"", {**base, "Content-Range": f"bytes {start}-{end}/{len(body)}", "Content-Length": str(len(part))})
    return Reply(200, body if method != "HEAD" else b"", {**base, "Content-Length": str(len(body))})


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 that answers every request with ``route``."""

    def __init__(self, route: Route):
        self.route = route
        self.requests: list[Request] = []
        self.bytes_sent = 0  # status lines, headers and bodies, as written to the socket
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _answer(self):
                headers = {key.lower(): value for key, value in self.headers.items()}
                length = int(headers.get("content-length", 0) or 0)
                if length:
                    self.rfile.read(length)
                with server._lock:
                    server.requests.append(Request(self.command, self.path, headers))
                reply = server.route(self.command, self.path, headers)
                reply_headers = dict(reply.headers)
                if "Content-Length" not in reply_headers:
                    reply_headers["Content-Length"] = str(len(reply.body))
                self.send_response(reply.status)
                for key, value in reply_headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)
                with server._lock:
                    server.bytes_sent += len(reply.body) if self.command != "HEAD" else 0

            do_GET = do_HEAD = do_POST = _answer

            def flush_headers(self):
                # Count header bytes too: BaseHTTPRequestHandler buffers them in _headers_buffer.
                buffered = sum(len(chunk) for chunk in getattr(self, "_headers_buffer", []))
                with server._lock:
                    server.bytes_sent += buffered
                super().flush_headers()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class LoopbackFactory:
    """Starts loopback servers for one test and stops them all at its end."""

    Reply = Reply  # so tests can build replies without importing this conftest
    file_reply = staticmethod(file_reply)

    def __init__(self):
        self._servers: list[LoopbackServer] = []

    def serve(self, route: Route) -> LoopbackServer:
        server = LoopbackServer(route)
        self._servers.append(server)
        return server

    def serve_files(self, files: dict[str, bytes], honour_range: bool = True) -> LoopbackServer:
        def route(method: str, path: str, headers: dict) -> Reply:
            body = files.get(path.split("?")[0])
            if body is None:
                return Reply(404, b"not found")
            return file_reply(method, body, headers, honour_range)

        return self.serve(route)

    def stop_all(self) -> None:
        for server in self._servers:
            server.stop()


@pytest.fixture
def loopback():
    """Factory of loopback HTTP servers (``serve_files``, ``serve``), stopped after the test."""
    factory = LoopbackFactory()
    yield factory
    factory.stop_all()


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening on it (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections but never answers (a hung server)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()
