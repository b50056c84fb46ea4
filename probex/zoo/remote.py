"""Layer-selective remote reading: fetch one tensor of a remote safetensors file, not the file.

A :class:`RemoteSafetensors` reads the header of a file on a web server (the Hugging Face Hub
or any server that honours HTTP ``Range`` requests) with one or two small range requests,
validates it with the same parser as local files, and then fetches only the byte ranges of
the tensors asked for. One layer of a ViT-B checkpoint costs a few megabytes instead of the
whole 350 MB file::

    remote = RemoteSafetensors.from_hub("ProbeX/Model-J__MAE__model_idx_0929", "model.safetensors")
    layer = remote.read_tensors(["vit.encoder.layer.11.attention.attention.query.weight"])
    remote.bytes_transferred  # response body bytes received so far

What arrives is bounded and checked, since the server is a stranger: every read has an overall
deadline (``deadline`` seconds, default ``PROBEX_REMOTE_DEADLINE``: a server that drips a byte a
second is cut off, not waited for); no tensor larger than ``PROBEX_MAX_LAYER_BYTES`` is asked for,
whatever the header declares (:mod:`probex.zoo.limits`); every answer must have the asked length,
the same file size and the same ETag as the first one (a file replaced on the server mid-read is
refused, not mixed); and when the Hub names the file's SHA-256 (``X-Linked-Etag``) and a read
covers the whole file, its bytes are hashed and compared.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterable

import torch

from probex.errors import HubUnavailableError, ProbeXError, ZooError
from probex.zoo.hub.environment import (HubBusyError, hub_auth_headers, hub_endpoint, hub_offline_error, is_hub_offline,
                                        retry_after_seconds)
from probex.zoo.deadline import Deadline, deadline_handlers, read_body
from probex.zoo.limits import check_limit, limit
from probex.zoo.safefile import (
    LENGTH_FIELD_BYTES,
    SafetensorsHeader,
    TensorInfo,
    header_length,
    parse_header,
    select_tensors,
    tensor_from_bytes,
)

logger = logging.getLogger(__name__)

#: Bytes asked for in the first request: small headers (most LoRA and small models) arrive
#: whole in one round trip; larger ones cost a second request for the rest.
FIRST_REQUEST_BYTES = 4096

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_SHA256 = re.compile(r'^(?:W/)?"?([0-9a-f]{64})"?$')


def hub_file_url(
    repo_id: str,
    filename: str,
    revision: str = "main",
    endpoint: str | None = None,
    repo_type: str = "model",
) -> str:
    """The download URL of one file of a Hub repository.

    ``{endpoint}/{repo_id}/resolve/{revision}/{filename}`` (``/datasets/`` or ``/spaces/``
    before the repo id for those repo types). The endpoint defaults to ``HF_ENDPOINT`` or
    ``https://huggingface.co``.
    """
    base = (endpoint or hub_endpoint()).rstrip("/")
    prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}.get(repo_type)
    if prefix is None:
        raise ProbeXError(f"repo_type must be 'model', 'dataset' or 'space', got {repo_type!r}")
    return (
        f"{base}/{prefix}{repo_id}/resolve/{urllib.parse.quote(revision, safe='')}/"
        f"{urllib.parse.quote(filename, safe='/')}"
    )


class RemoteSafetensors:
    """A safetensors file on a web server, read tensor by tensor with HTTP range requests.

    Args:
        url: the file's URL; the server must honour ``Range: bytes=a-b`` (answer 206).
        headers: extra request headers (e.g. ``Authorization``); dropped on redirects to
            another host, so a token never leaks to a CDN.
        timeout: seconds to wait for the server on each socket operation.
        deadline: seconds one read (the header, or one ``read_tensors`` request) may take in all;
            default ``PROBEX_REMOTE_DEADLINE`` (300).
        first_request_bytes: bytes asked for in the first request; a header that fits arrives
            in one round trip (a download of many files of one architecture passes the size of
            the first file's header here).

    Attributes:
        header: the validated :class:`~probex.zoo.safefile.SafetensorsHeader`.
        file_size: total size of the remote file in bytes (from ``Content-Range``).
        bytes_transferred: response body bytes received so far (header and tensors).
        requests_made: number of HTTP requests sent so far.
        expected_sha256: the file's SHA-256 as the Hub names it (``X-Linked-Etag``), or None.
        commit: the Hub's ``X-Repo-Commit`` (the Hub sends it on the redirect to its CDN, and
            on the answer itself when it serves the file directly), else None.
        etag: the file's ETag (the Hub's ``X-Linked-Etag`` on the redirect, else ``ETag``);
            every later answer must carry the same one, so a file that changes on the server
            while it is read (a new commit on ``main``) is an error, never a mix of two files.

    Raises:
        ZooError: the server does not support range requests, the file is missing or
            forbidden, its header is malformed, or it changed while being read.
        HubBusyError: the server answered 429 or 5xx (``retry_after`` says when to try again).
        HubUnavailableError: the host cannot be reached (refused, DNS failure, timeout).
    """

    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 30,
                 deadline: float | None = None, first_request_bytes: int = FIRST_REQUEST_BYTES):
        self.url = url
        self._first_request_bytes = max(LENGTH_FIELD_BYTES, int(first_request_bytes))
        self.etag: str | None = None  # the Hub's X-Linked-Etag (else ETag) of the first answer
        self.timeout = timeout
        self.deadline = float(deadline if deadline is not None else limit("PROBEX_REMOTE_DEADLINE"))
        self.expected_sha256: str | None = None  # the Hub's X-Linked-Etag of an LFS file, when sent
        self._etag: str | None = None  # the first answer's ETag: every later answer must match it
        self._headers = dict(headers or {})
        self.bytes_transferred = 0
        self.requests_made = 0
        self.file_size: int | None = None
        self.commit: str | None = None  # the Hub's X-Repo-Commit, when the server sends it
        self._prefix = b""  # the first bytes of the file, kept: small tensors may lie in them
        self.header: SafetensorsHeader = self._read_header()

    @classmethod
    def from_hub(
        cls,
        repo_id: str,
        filename: str,
        revision: str = "main",
        endpoint: str | None = None,
        timeout: float = 30,
    ) -> "RemoteSafetensors":
        """Open ``filename`` of the Hub model repo ``repo_id``, with the user's HF token if any.

        Respects ``HF_HUB_OFFLINE=1`` (fails at once) and ``HF_ENDPOINT``.
        """
        endpoint = (endpoint or hub_endpoint()).rstrip("/")
        if is_hub_offline():
            raise hub_offline_error(endpoint)
        url = hub_file_url(repo_id, filename, revision=revision, endpoint=endpoint)
        return cls(url, headers=hub_auth_headers(), timeout=timeout)

    def __repr__(self) -> str:
        return f"RemoteSafetensors({self.url!r}, tensors={len(self.header.tensors)}, file_size={self.file_size})"

    # --- reading --------------------------------------------------------------------------

    def read_tensors(self, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Fetch the named tensors (all when None), each as a contiguous CPU tensor.

        Only the byte ranges of those tensors travel; ranges that touch are fetched in one
        request. Returns the tensors keyed by name in the order asked.

        Raises:
            ZooError: a name is missing (the message lists the closest names) or the server
                answers with the wrong bytes.
            HubUnavailableError: the host stopped answering.
        """
        infos = select_tensors(self.header, names)
        for info in infos:  # decided by our limit, before a byte is asked for
            check_limit("PROBEX_MAX_LAYER_BYTES", info.nbytes, f"{self.url}: tensor '{info.name}'")
        raw: dict[str, bytes] = {}
        pieces = [(0, self._prefix)]
        for start, end, group in _merge_ranges(infos, self.header.data_offset, limit("PROBEX_MAX_LAYER_BYTES")):
            if end <= len(self._prefix):
                block = self._prefix[start:end]
            else:
                block = self._fetch(start, end)
            pieces.append((start, block))
            for info in group:
                offset = self.header.data_offset + info.start - start
                raw[info.name] = block[offset : offset + info.nbytes]
        self._verify_whole_file(pieces)
        return {info.name: tensor_from_bytes(info, raw[info.name]) for info in infos}

    def _verify_whole_file(self, pieces: list[tuple[int, bytes]]) -> None:
        """When ``pieces`` cover the whole file and the Hub named its SHA-256, the bytes must hash to it."""
        if self.expected_sha256 is None or self.file_size is None:
            return
        digest, position = hashlib.sha256(), 0
        for start, block in sorted(pieces, key=lambda piece: piece[0]):
            if start > position:
                return  # a gap: not the whole file, nothing to compare
            digest.update(block[position - start:])
            position = max(position, start + len(block))
        if position < self.file_size:
            return
        if digest.hexdigest() != self.expected_sha256:
            raise ZooError(f"{self.url}: the bytes received do not hash to the SHA-256 the server names for the "
                           f"file ({self.expected_sha256[:12]}...); it changed or was corrupted on the way. Read it again.")

    def _read_header(self) -> SafetensorsHeader:
        first = self._fetch(0, self._first_request_bytes, allow_short=True)
        length = header_length(first, self.file_size, self.url)
        needed = LENGTH_FIELD_BYTES + length
        if len(first) < needed:
            first += self._fetch(len(first), needed)
        self._prefix = first
        return parse_header(first, self.file_size, self.url)

    def _fetch(self, start: int, end: int, allow_short: bool = False) -> bytes:
        """Bytes ``[start, end)`` of the file, with one range request, within the deadline.

        With ``allow_short`` the server may return fewer bytes when the file ends earlier.
        """
        headers = {**self._headers, "Range": f"bytes={start}-{end - 1}", "Accept-Encoding": "identity"}
        if self._etag is not None and not self._etag.startswith("W/"):
            headers["If-Range"] = self._etag  # a changed file then comes back whole (200), which is refused
        request = urllib.request.Request(self.url, headers=headers)
        deadline = Deadline(self.deadline)
        request.probex_deadline = deadline
        request.probex_linked = {}  # the Hub's X-Linked-* headers, filled in by the redirect handler
        self.requests_made += 1
        try:
            with _OPENER.open(request, timeout=min(self.timeout, max(deadline.remaining(), 0.001))) as response:
                if response.status == 200 and "If-Range" in headers:
                    raise ZooError(f"{self.url}: the file changed on the server since its header was read; read it again")
                if response.status == 200:
                    # Reading on would download the whole file; refuse instead.
                    raise ZooError(
                        f"{self.url}: the server does not support HTTP range requests (it answered "
                        "200 with the whole file instead of 206 with the asked bytes); download the "
                        "file and read it locally instead"
                    )
                if response.status != 206:
                    raise ZooError(f"{self.url}: unexpected HTTP status {response.status} to a range request")
                first, last, total = _parse_content_range(response.headers.get("Content-Range"), self.url)
                if self.file_size is None:
                    self.file_size = total
                linked = getattr(request, "probex_linked", {})
                self.commit = self.commit or linked.get("x-repo-commit") or response.headers.get("X-Repo-Commit")
                self._check_same_file(total, response.headers.get("ETag"), linked)
                self._check_version(linked.get("x-linked-etag") or response.headers.get("ETag"))
                expected = (min(end, total) if allow_short and total is not None else end) - start
                if first != start or last + 1 - first != expected:
                    raise ZooError(
                        f"{self.url}: asked for bytes {start}-{end - 1}, the server sent {first}-{last}"
                    )
                body = read_body(response, expected, deadline)
        except urllib.error.HTTPError as error:
            raise self._http_error(error, start, end) from None
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError) as error:
            if deadline.expired:
                raise self._too_slow() from None
            raise _unreachable(self.url, error) from None
        except ZooError:
            if deadline.expired:  # an answer cut short by the deadline looks malformed: say what happened
                raise self._too_slow() from None
            raise
        finally:
            deadline.cancel()
        if deadline.expired:
            raise self._too_slow()
        self.bytes_transferred += len(body)
        if len(body) != expected:
            raise ZooError(f"{self.url}: the connection ended after {len(body)} of {expected} bytes")
        return body

    def _check_same_file(self, total: int | None, etag: str | None, linked: dict[str, str]) -> None:
        """Every answer must describe the file of the first one: the same size and ETag."""
        if self.file_size is not None and total is not None and total != self.file_size:
            raise ZooError(f"{self.url}: the file changed on the server while it was read (size {self.file_size} "
                           f"bytes, now {total}); read it again")
        if etag:
            if self._etag is None:
                self._etag = etag
            elif etag != self._etag:
                raise ZooError(f"{self.url}: the file changed on the server while it was read (ETag {self._etag} "
                               f"became {etag}); read it again")
        size = linked.get("x-linked-size")
        if size is not None and size.isdigit() and total is not None and int(size) != total:
            raise ZooError(f"{self.url}: the Hub says the file is {size} bytes, the server that sent it says {total}")
        match = _SHA256.match((linked.get("x-linked-etag") or "").strip())
        if match and self.expected_sha256 is None:
            self.expected_sha256 = match.group(1)

    def _check_version(self, etag: str | None) -> None:
        """Keep the first answer's version (the Hub's ETag); refuse an answer about another version of the file."""
        if etag is None:
            return
        if self.etag is None:
            self.etag = etag
        elif etag != self.etag:
            raise ZooError(
                f"{self.url}: the file changed on the server while it was read (ETag {self.etag} became "
                f"{etag}: a new commit on the branch?); read a fixed revision, e.g. revision={self.commit or 'COMMIT'}"
            )

    def _too_slow(self) -> HubUnavailableError:
        return HubUnavailableError(
            f"{self.url}: the server did not deliver within the deadline of {self.deadline:g} s for one read; it "
            "is too slow or stalling. Try again later, or raise PROBEX_REMOTE_DEADLINE (seconds)")

    def _http_error(self, error: urllib.error.HTTPError, start: int, end: int) -> Exception:
        status = error.code
        retry_after = retry_after_seconds(error.headers.get("Retry-After") if error.headers else None)
        error.close()
        if status == 416:
            return ZooError(
                f"{self.url}: bytes {start}-{end - 1} lie beyond the end of the file; it is empty, "
                "truncated or not a safetensors file"
            )
        if status in (401, 403):
            return ZooError(
                f"{self.url}: access denied (HTTP {status}); for a gated or private Hub repo, log in "
                "with `huggingface-cli login` or set HF_TOKEN"
            )
        if status == 404:
            return ZooError(f"{self.url}: not found (HTTP 404); check the repo id, revision and file name")
        if status == 429:
            return HubBusyError(f"{self.url}: rate limited (HTTP 429); try again later", retry_after=retry_after)
        if status >= 500:
            return HubBusyError(
                f"{self.url}: the server failed (HTTP {status}); try again later, or work from files on disk",
                retry_after=retry_after,
            )
        return ZooError(f"{self.url}: HTTP {status} to a range request")


def _merge_ranges(infos: list[TensorInfo], data_offset: int, max_bytes: int | None = None) -> list[tuple[int, int, list[TensorInfo]]]:
    """Absolute byte ranges ``[start, end)`` to fetch, touching ranges merged (up to ``max_bytes`` each), with their tensors."""
    merged: list[tuple[int, int, list[TensorInfo]]] = []
    for info in sorted(infos, key=lambda item: item.start):
        start, end = data_offset + info.start, data_offset + info.end
        if merged and start <= merged[-1][1] and (max_bytes is None or end - merged[-1][0] <= max_bytes):
            previous_start, previous_end, group = merged[-1]
            merged[-1] = (previous_start, max(previous_end, end), group + [info])
        else:
            merged.append((start, end, [info]))
    return merged


def _parse_content_range(value: str | None, url: str) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.match((value or "").strip())
    if not match:
        raise ZooError(f"{url}: the server answered 206 without a valid Content-Range header ({value!r})")
    first, last, total = match.groups()
    return int(first), int(last), None if total == "*" else int(total)


def _unreachable(url: str, error: BaseException) -> HubUnavailableError:
    reason = getattr(error, "reason", None) or error
    host = urllib.parse.urlsplit(url).netloc
    return HubUnavailableError(
        f"{host} is unreachable ({reason}) while reading {url}. Check the network, or work from "
        "files on disk: download the model on a connected machine (`probex download repos ID`), "
        "copy the folder here and open it with `ModelZoo.open(PATH)`."
    )


class _DropAuthOnCrossHostRedirect(urllib.request.HTTPRedirectHandler):
    """Follow redirects (the Hub redirects file downloads to a CDN) without leaking tokens.

    The redirected request keeps the first one's deadline, and the Hub's ``X-Linked-Size`` /
    ``X-Linked-Etag`` (the LFS file's size and SHA-256) and ``X-Repo-Commit``, which the Hub sends
    only with the redirect, travel with it.
    """

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        if new is not None:
            new.probex_deadline = getattr(req, "probex_deadline", None)
            linked = getattr(req, "probex_linked", {})  # one dict, shared along the chain of redirects
            for key in ("X-Linked-Size", "X-Linked-Etag", "X-Repo-Commit"):
                if headers.get(key):
                    linked[key.lower()] = headers[key]
            new.probex_linked = linked
        return new


_OPENER = urllib.request.build_opener(_DropAuthOnCrossHostRedirect, *deadline_handlers())
