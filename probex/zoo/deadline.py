"""An overall deadline for one HTTP request made with urllib (the remote reader's requests).

A socket timeout bounds each wait, not their sum: a server that sends one byte a second never
trips it. Here a timer acts when the request's time is up: it shuts its sockets down (which
wakes a blocked read) and cuts their timeout to a millisecond (so the next read fails unless a
byte is already there); the body is read in small steps that stop once the time is up. A request carries its :class:`Deadline` as the attribute
``probex_deadline`` (a redirect handler copies it onto the redirected request); the handlers of
:func:`deadline_handlers` register each connection they open with it.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.request

#: Bytes read from the socket at a time (the deadline is checked between reads).
CHUNK_BYTES = 1 << 20


class Deadline:
    """The time one request may take in all: when it is up, the request's sockets are shut down.

    A socket timeout bounds each wait, not the sum of them: a server that sends one byte a second
    never trips it. Shutting the socket down from a timer makes the blocked read return at once,
    and a millisecond timeout makes every later read fail.
    """

    def __init__(self, seconds: float):
        self.expires = time.monotonic() + seconds
        self.expired = False
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def watch(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            self._connections.append(connection)
            if self.expired:
                _shut(connection)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for connection in self._connections:
                _shut(connection)

    def cancel(self) -> None:
        self._timer.cancel()


def _shut(connection: http.client.HTTPConnection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.settimeout(0.001)
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def read_body(response: http.client.HTTPResponse, expected: int, deadline: Deadline) -> bytes:
    """``expected`` bytes of the body, read as they arrive (at most ``expected`` bytes are ever held).

    ``read1`` returns after one read from the socket, so the deadline is looked at between any
    two arrivals, however small.
    """
    body = bytearray()
    while len(body) < expected and not deadline.expired:
        chunk = response.read1(min(CHUNK_BYTES, expected - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def _watched(base: type[http.client.HTTPConnection], deadline: Deadline | None):
    """A connection class whose sockets the request's deadline can shut down."""

    def connect(connection: http.client.HTTPConnection) -> None:
        base.connect(connection)
        if deadline is not None:
            deadline.watch(connection)

    return type(f"Watched{base.__name__}", (base,), {"connect": connect})


class _DeadlineHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_watched(http.client.HTTPConnection, getattr(req, "probex_deadline", None)), req)


class _DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_watched(http.client.HTTPSConnection, getattr(req, "probex_deadline", None)), req,
                            context=self._context)


def deadline_handlers() -> tuple[urllib.request.BaseHandler, ...]:
    """urllib handlers (HTTP and HTTPS) whose connections the request's ``probex_deadline`` can cut."""
    return (_DeadlineHTTPHandler(), _DeadlineHTTPSHandler())
