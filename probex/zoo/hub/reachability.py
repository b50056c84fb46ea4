"""Whether the Hub answers: checked once, within a few seconds, before any long work."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

from probex.zoo.hub.environment import hub_endpoint, hub_offline_error, hub_unreachable_error, is_hub_offline

#: Seconds the reachability check waits before calling the Hub unreachable.
REACHABILITY_TIMEOUT = 5.0


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
