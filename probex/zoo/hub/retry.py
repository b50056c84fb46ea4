"""Retrying Hub requests: which failures are worth another try, and how long to wait before it.

The Hub limits anonymous requests (about 3,000 file resolves per 5 minutes) and answers 429
past that, often with a ``Retry-After``; a 5xx is a hiccup of its own. Both are retried, after
the server's ``Retry-After`` when it sends one (up to :data:`MAX_RETRY_AFTER`), else after an
exponential backoff (:data:`RETRY_DELAYS`). Network failures (refused, reset, timed out) are
retried too; when they persist the Hub is called unreachable. Anything else (a missing repo, a
gated one, a bad file) is final for that item and never retried.
"""

from __future__ import annotations

import importlib
import logging
import random
import time
from typing import Callable, TypeVar

from probex.errors import HubUnavailableError, ZooError
from probex.zoo.hub.environment import HubBusyError, hub_unreachable_error, retry_after_seconds

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Seconds to wait before each retry when the server names no ``Retry-After`` (doubling, with jitter).
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)

#: Retries of a network failure (refused, reset, timed out) before the Hub is called unreachable;
#: a rate limit or a server error gets every delay of RETRY_DELAYS.
NETWORK_RETRIES = 3

#: The longest ``Retry-After`` honoured, in seconds (a little over the Hub's 5-minute rate window).
MAX_RETRY_AFTER = 330.0

# Indirection so tests can record the waits instead of sleeping them.
_sleep = time.sleep


def transport_errors() -> tuple[type[BaseException], ...]:
    """The network-failure exception types of the HTTP clients huggingface_hub may use (httpx2, httpx, requests)."""
    found: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def http_status(error: BaseException) -> int | None:
    """The HTTP status of a huggingface_hub HTTP error, else None."""
    return getattr(getattr(error, "response", None), "status_code", None)


def is_transient(error: BaseException) -> bool:
    """Network trouble, a rate limit or a server hiccup (worth a retry), as opposed to a missing repo."""
    if isinstance(error, HubUnavailableError):
        return True
    from huggingface_hub.errors import LocalEntryNotFoundError

    if isinstance(error, transport_errors() + (LocalEntryNotFoundError,)):
        return True
    status = http_status(error)
    return status is not None and (status >= 500 or status == 429)


def retry_after(error: BaseException) -> float | None:
    """Seconds the server asked to wait before the next try (``Retry-After``), or None."""
    if isinstance(error, HubBusyError):
        return error.retry_after
    headers = getattr(getattr(error, "response", None), "headers", None)
    return retry_after_seconds(headers.get("Retry-After")) if headers is not None else None


def with_retries(work: Callable[[], T], what: str, endpoint: str) -> T:
    """Run ``work``, retrying transient failures (see the module docstring); translate the final failure.

    Returns what ``work`` returns. Raises HubUnavailableError when the network or the server
    stays down, and ZooError for a permanent failure of this one item (missing repo, gated
    repo, bad file).
    """
    from huggingface_hub.errors import HfHubHTTPError

    last: BaseException | None = None
    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            return work()
        except ZooError:
            raise
        except Exception as error:  # noqa: BLE001 - classified below
            if not is_transient(error):
                if isinstance(error, HfHubHTTPError):
                    raise ZooError(f"{what}: {first_line(error)}") from None
                raise
            last = error
        busy = isinstance(last, HubBusyError) or http_status(last) is not None
        if attempt == (len(RETRY_DELAYS) if busy else min(NETWORK_RETRIES, len(RETRY_DELAYS))):
            break
        asked = retry_after(last)
        delay = min(asked, MAX_RETRY_AFTER) if asked is not None else RETRY_DELAYS[attempt] * random.uniform(0.75, 1.25)
        logger.warning("%s: %s; retrying in %.3g s", what, first_line(last), delay)
        _sleep(delay)
    if isinstance(last, HubUnavailableError):
        raise last
    raise hub_unreachable_error(endpoint, f"{what}: {first_line(last)}") from None


def first_line(error: BaseException | None) -> str:
    """``ErrorType: first line of the message``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
