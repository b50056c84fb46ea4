"""Family 4: misbehaving HTTP servers against the remote reader (loopback only).

Each server is a small generator of one misbehaviour: dripping a byte at a time (body or
headers), declaring a 1 TiB tensor, swapping the file between requests (ETag, size), sending
the wrong range or too few bytes, naming a SHA-256 or size the bytes do not match. Every read
ends within its deadline in a ProbeXError (never a MemoryError or a hang), and nothing is mixed.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
import time
import tracemalloc

import pytest
import torch
from safetensors.torch import save

from probex.errors import HubUnavailableError, LimitError, ProbeXError, ZooError
from probex.zoo.remote import RemoteSafetensors

_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def model_blob(seed: int) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return save({f"layer{i}.weight": torch.randn(64, 64, generator=generator) for i in range(4)})


def _range(headers: dict, size: int) -> tuple[int, int]:
    first, last = map(int, _RANGE.match(headers["range"]).groups())
    return first, min(last, size - 1)


def partial(loopback, blob: bytes, extra=lambda request_number: {}):
    """A Range-honouring server whose n-th answer carries ``extra(n)`` headers."""
    count = [0]

    def route(method, path, headers):
        count[0] += 1
        first, last = _range(headers, len(blob))
        return loopback.Reply(206, blob[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(blob)}",
                                                          **extra(count[0])})

    return loopback.serve(route)


class DripServer:
    """A raw socket server that sends ``whole`` at once, then ``dripped`` (then ``x``) a byte every ``interval`` s."""

    def __init__(self, whole: bytes, dripped: bytes, interval: float = 0.2):
        self.whole, self.dripped, self.interval = whole, dripped, interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/model.safetensors"

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        try:
            connection.recv(65536)
            connection.sendall(self.whole)
            for position in range(10**6):
                if self.stopped.is_set():
                    return
                connection.sendall(self.dripped[position:position + 1] or b"x")
                time.sleep(self.interval)
        except OSError:
            return
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def drip():
    servers = []

    def start(whole: bytes, dripped: bytes, interval: float = 0.1) -> DripServer:
        servers.append(DripServer(whole, dripped, interval))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


DRIPS = {  # (sent at once, then dripped a byte at a time)
    "the body, a byte at a time": (b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-4095/100000\r\n"
                                   b"Content-Length: 4096\r\n\r\n", b""),
    "the status line and headers, a byte at a time": (b"", b"HTTP/1.1 206 Partial Content\r\nX-Padding: "),
    "an endless header line, a byte at a time": (b"HTTP/1.1 206 Partial Content\r\n", b"X-Padding: "),
}


@pytest.mark.parametrize("case", list(DRIPS))
def test_a_dripping_server_is_cut_off_at_the_deadline(case, drip):
    server = drip(*DRIPS[case])
    started = time.perf_counter()
    with pytest.raises(HubUnavailableError, match="deadline"):
        RemoteSafetensors(server.url, timeout=1, deadline=2)
    assert time.perf_counter() - started < 5


def test_a_header_declaring_a_1_tib_tensor_is_refused_without_allocating_it(loopback):
    terabyte = 2**40
    header = json.dumps({"huge": {"dtype": "U8", "shape": [terabyte], "data_offsets": [0, terabyte]}}).encode()
    head = struct.pack("<Q", len(header)) + header
    size = len(head) + terabyte

    def route(method, path, headers):
        first, last = _range(headers, size)
        body = (head + b"\0" * 4096)[first:last + 1]
        return loopback.Reply(206, body, {"Content-Range": f"bytes {first}-{last}/{size}"})

    remote = RemoteSafetensors(loopback.serve(route).url + "/m.safetensors", deadline=5)
    tracemalloc.start()
    try:
        with pytest.raises(LimitError, match="PROBEX_MAX_LAYER_BYTES"):
            remote.read_tensors(["huge"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


SWAPS = {
    "another file behind the header (ETag changes)": lambda n: {"ETag": '"aaa"' if n == 1 else '"bbb"'},
    "another file behind the header (weak ETag changes)": lambda n: {"ETag": 'W/"aaa"' if n == 1 else 'W/"bbb"'},
}


@pytest.mark.parametrize("case", list(SWAPS))
def test_a_file_swapped_between_requests_is_refused_not_mixed(case, loopback):
    blob = model_blob(0)
    remote = RemoteSafetensors(partial(loopback, blob, SWAPS[case]).url + "/m.safetensors", deadline=5)
    with pytest.raises(ZooError, match="changed on the server"):
        remote.read_tensors(["layer3.weight"])


def test_a_file_whose_size_changes_between_requests_is_refused(loopback):
    first_blob, second_blob = model_blob(0), model_blob(0) + b"\0" * 100
    count = [0]

    def route(method, path, headers):
        count[0] += 1
        blob = first_blob if count[0] == 1 else second_blob
        first, last = _range(headers, len(blob))
        return loopback.Reply(206, blob[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(blob)}"})

    remote = RemoteSafetensors(loopback.serve(route).url + "/m.safetensors", deadline=5)
    with pytest.raises(ZooError, match="changed on the server"):
        remote.read_tensors(["layer3.weight"])


def test_a_server_that_answers_if_range_with_the_whole_new_file_is_refused(loopback):
    blob = model_blob(0)
    count = [0]

    def route(method, path, headers):
        count[0] += 1
        if count[0] > 1:
            assert headers.get("if-range") == '"v1"'
            return loopback.Reply(200, blob, {"ETag": '"v2"'})
        first, last = _range(headers, len(blob))
        return loopback.Reply(206, blob[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(blob)}", "ETag": '"v1"'})

    remote = RemoteSafetensors(loopback.serve(route).url + "/m.safetensors", deadline=5)
    with pytest.raises(ZooError, match="changed on the server"):
        remote.read_tensors(["layer3.weight"])


BROKEN_ANSWERS = {  # (answer to the tensor request, what the error says)
    "the wrong range": (lambda blob, first, last: (blob[first + 1:last + 2], f"bytes {first + 1}-{last + 1}/{len(blob)}"),
                        "the server sent"),
    "too few bytes, then the connection ends": (lambda blob, first, last: (blob[first:last], f"bytes {first}-{last}/{len(blob)}"),
                                                "unreachable|ended after"),
    "no Content-Range": (lambda blob, first, last: (blob[first:last + 1], ""), "Content-Range"),
    "an unparsable Content-Range": (lambda blob, first, last: (blob[first:last + 1], "bytes ?-?/?"), "Content-Range"),
}


@pytest.mark.parametrize("case", list(BROKEN_ANSWERS))
def test_a_broken_answer_to_a_tensor_request_is_a_clear_error(case, loopback):
    blob = model_blob(0)
    answer, message = BROKEN_ANSWERS[case]
    count = [0]

    def route(method, path, headers):
        count[0] += 1
        first, last = _range(headers, len(blob))
        if count[0] == 1:
            return loopback.Reply(206, blob[first:last + 1], {"Content-Range": f"bytes {first}-{last}/{len(blob)}"})
        body, content_range = answer(blob, first, last)
        reply_headers = {"Content-Range": content_range} if content_range else {}
        if case.startswith("too few"):
            reply_headers["Content-Length"] = str(last - first + 1)  # promises more than it sends
        return loopback.Reply(206, body, reply_headers)

    remote = RemoteSafetensors(loopback.serve(route).url + "/m.safetensors", deadline=3)
    started = time.perf_counter()
    with pytest.raises(ProbeXError, match=message):
        remote.read_tensors(["layer3.weight"])
    assert time.perf_counter() - started < 5


def _hub_like(loopback, blob: bytes, linked_etag: str, linked_size: int) -> str:
    """A /resolve/ URL that redirects (with the Hub's X-Linked-* headers) to a CDN serving ``blob``."""
    cdn = partial(loopback, blob)

    def resolve(method, path, headers):
        return loopback.Reply(302, b"", {"Location": cdn.url + "/blob", "X-Linked-Etag": f'"{linked_etag}"',
                                         "X-Linked-Size": str(linked_size)})

    return loopback.serve(resolve).url + "/owner/repo/resolve/main/model.safetensors"


def test_whole_file_bytes_that_do_not_hash_to_the_hubs_sha256_are_refused(loopback):
    blob = model_blob(0)
    remote = RemoteSafetensors(_hub_like(loopback, blob, hashlib.sha256(b"another file").hexdigest(), len(blob)), deadline=5)
    with pytest.raises(ZooError, match="SHA-256"):
        remote.read_tensors()


def test_a_size_that_differs_from_the_hubs_is_refused(loopback):
    blob = model_blob(0)
    with pytest.raises(ZooError, match="the Hub says the file is"):
        RemoteSafetensors(_hub_like(loopback, blob, hashlib.sha256(blob).hexdigest(), len(blob) + 1), deadline=5)


def test_whole_file_bytes_that_hash_to_the_hubs_sha256_are_read(loopback):
    blob = model_blob(0)
    remote = RemoteSafetensors(_hub_like(loopback, blob, hashlib.sha256(blob).hexdigest(), len(blob)), deadline=5)
    assert remote.expected_sha256 == hashlib.sha256(blob).hexdigest()
    assert len(remote.read_tensors()) == 4


def test_the_remote_attack_families_add_up():
    servers = len(DRIPS) + 1 + len(SWAPS) + 2 + len(BROKEN_ANSWERS) + 2
    assert servers == 14
