"""The Hugging Face Hub: where it is, whether it answers, and downloads of Model-J and user repos.

Every entry point checks, before any long work, that the Hub answers within a few seconds
(:func:`check_hub_reachable`); offline (no network, or ``HF_HUB_OFFLINE=1``) it fails at once
with a :class:`~probex.errors.HubUnavailableError` whose one paragraph says how to work from
files on disk instead.

Environment variables honoured: ``HF_ENDPOINT`` (the Hub's address), ``HF_HUB_OFFLINE``
(never touch the network), ``HF_TOKEN`` / the token saved by ``huggingface-cli login``
(gated or private repos).
"""

from __future__ import annotations

import logging
import os
import threading
import urllib.error
import urllib.request

from probex.errors import HubUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"

#: Seconds the reachability check waits before calling the Hub unreachable.
REACHABILITY_TIMEOUT = 5.0


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


def check_hub_reachable(endpoint: str | None = None, timeout: float = REACHABILITY_TIMEOUT) -> str:
    """Fail fast when the Hub cannot be used; return its endpoint when it answers.

    Any HTTP answer counts as reachable (even an error status); a refused connection, a DNS
    failure or silence for ``timeout`` seconds does not. The check runs in a helper thread so
    that a slow DNS resolver cannot stretch it past ``timeout``.

    Raises:
        HubUnavailableError: ``HF_HUB_OFFLINE`` is set or the Hub does not answer.
    """
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    if is_hub_offline():
        raise hub_offline_error(endpoint)
    outcome: dict[str, object] = {}

    def probe() -> None:
        request = urllib.request.Request(f"{endpoint}/api/models?limit=1", method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered, which is all we ask here
        except Exception as error:  # noqa: BLE001 - any failure to connect means unreachable
            outcome["error"] = getattr(error, "reason", None) or error
        outcome["done"] = True

    thread = threading.Thread(target=probe, name="probex-hub-check", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if "done" not in outcome:
        raise hub_unreachable_error(endpoint, f"no answer within {timeout:g} s")
    if "error" in outcome:
        raise hub_unreachable_error(endpoint, outcome["error"])
    return endpoint
