"""Where the Hugging Face Hub is, whether the user asked for it to be left alone, and the messages for when it cannot be used.

Environment variables honoured: ``HF_ENDPOINT`` (the Hub's address), ``HF_HUB_OFFLINE``
(never touch the network), ``HF_TOKEN`` / the token saved by ``huggingface-cli login``
(gated or private repos).
"""

from __future__ import annotations

import email.utils
import os
import time

from probex.errors import HubUnavailableError

DEFAULT_ENDPOINT = "https://huggingface.co"


class HubBusyError(HubUnavailableError):
    """The Hub answered but asked to be left alone for now: HTTP 429 (rate limit) or a 5xx error.

    Attributes:
        retry_after: seconds the server asked to wait (its ``Retry-After``), or None.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: a number of seconds or an HTTP date; None if absent or unreadable."""
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())

def hub_endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT`` when set, else ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def is_hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` asks that nothing touch the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_auth_headers() -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` when the user has a Hub token, else ``{}``."""
    try:
        from huggingface_hub import get_token
    except ImportError:  # the hub extra is not installed: only the environment variable counts
        token = os.environ.get("HF_TOKEN")
    else:
        token = get_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


_OFFLINE_ADVICE = (
    "To work without the Hub, point probex at files on disk: `ModelZoo.open(PATH)` in Python or "
    "`probex zoo info PATH` on the command line, where PATH is a folder made by `probex download` "
    "on a connected machine and copied here."
)


def hub_offline_error(endpoint: str | None = None) -> HubUnavailableError:
    """The error for ``HF_HUB_OFFLINE=1``: one paragraph that says what to do instead."""
    endpoint = endpoint or hub_endpoint()
    return HubUnavailableError(
        f"the Hugging Face Hub at {endpoint} is not contacted because HF_HUB_OFFLINE is set. "
        f"Unset it to download. {_OFFLINE_ADVICE}"
    )


def hub_unreachable_error(endpoint: str, reason: object) -> HubUnavailableError:
    """The error for a Hub that does not answer: one paragraph that says what to do instead."""
    return HubUnavailableError(
        f"the Hugging Face Hub at {endpoint} is unreachable ({reason}). Check the network (and "
        f"HF_ENDPOINT if you use a mirror). {_OFFLINE_ADVICE}"
    )
