"""The Hugging Face Hub: its address and the user's wishes, reachability, the Model-J catalogue, downloads.

Modules, one idea each: :mod:`~probex.zoo.hub.environment` (endpoint, offline switch, token,
and the messages for a Hub that cannot be used), :mod:`~probex.zoo.hub.reachability` (does it
answer, checked before any long work), :mod:`~probex.zoo.hub.catalogue` (Model-J's subsets,
splits and model lists), :mod:`~probex.zoo.hub.download` (the download engine: layer-only downloads
through byte ranges), :mod:`~probex.zoo.hub.retry` (rate limits and retries) and
:mod:`~probex.zoo.hub.journal` (the report of a download, and what earlier runs finished).
"""

from __future__ import annotations

from probex.zoo.hub.catalogue import modelj_model_ids
from probex.zoo.hub.download import download_modelj, download_repos
from probex.zoo.hub.journal import DownloadIncompleteError, DownloadReport
from probex.zoo.hub.reachability import check_hub_reachable

__all__ = ["DownloadIncompleteError", "DownloadReport", "check_hub_reachable", "download_modelj", "download_repos",
           "modelj_model_ids"]
