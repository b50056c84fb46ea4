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
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from probex.errors import HubUnavailableError, ZooError
from probex.progress import Progress

T = TypeVar("T")

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


# --- downloads ----------------------------------------------------------------------------------

MODELJ_DATASET = "ProbeX/Model-J"
DISCRIMINATIVE_SUBSETS = ("SupViT", "DINO", "MAE", "ResNet")
GENERATIVE_SUBSETS = ("SD_200", "SD_1k")
DISCRIMINATIVE_SPLITS = ("train", "val", "test")
GENERATIVE_SPLITS = ("train", "val", "test", "val_holdout", "test_holdout")

#: Pickle-based files are never fetched (Model-J ships ``training_args.bin``).
NEVER_DOWNLOAD = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]

#: Seconds to wait before each retry of a download that failed for a transient reason.
RETRY_DELAYS = (1.0, 4.0, 10.0)


def modelj_subset(name: str) -> str:
    """The canonical Model-J subset name for ``name`` (case and dots ignored: ``sup.vit`` -> ``SupViT``)."""
    wanted = name.replace(".", "").replace("-", "_").lower()
    for subset in DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS:
        if subset.lower() == wanted:
            return subset
    raise ZooError(
        f"unknown Model-J subset {name!r}; choose one of "
        f"{', '.join(DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS)}"
    )


def modelj_model_ids(subset: str, split: str, *, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Hub repo ids of the models of one split of a discriminative Model-J subset.

    Read from the metadata dataset ``ProbeX/Model-J`` (one config per subset; the table's
    ``hf_model_id`` column). This is the only place that knows where the model list lives.
    """
    table = _read_modelj_table(modelj_subset(subset), split, endpoint=endpoint, cache_dir=cache_dir)
    for column in ("hf_model_id", "model_id", "repo_id"):
        if column in table:
            return [str(value) for value in table[column]]
    raise ZooError(
        f"{MODELJ_DATASET} ({subset}/{split}): the table has no hf_model_id column; "
        f"columns: {', '.join(table)}"
    )


def download_modelj(
    subset: str,
    out_dir: str | os.PathLike,
    splits: Sequence[str] | None = None,
    images: bool = False,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download a Model-J subset into ``out_dir/<subset>`` and return that folder.

    Discriminative subsets (SupViT, DINO, MAE, ResNet) land in the Hugging Face cache layout,
    one folder per split: ``<subset>/<split>/models--ProbeX--Model-J__<subset>__model_idx_XXXX``.
    Generative subsets (SD_200, SD_1k) are one repo, copied as is:
    ``<subset>/<split>/model_idx_XXXX/pytorch_lora_weights.safetensors`` (and
    ``training_images/`` with ``images=True``).

    Args:
        splits: the splits to fetch (default: all of the subset's splits).
        images: also fetch the training images (generative subsets).
        layers: fetch only these tensors (names, or module prefixes such as
            ``unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q``) with HTTP
            range requests, instead of whole weight files; the files written hold just them.
        progress: ``progress(done, total, message)`` after each model or file.

    Downloads resume where an interrupted one stopped and are retried on transient errors.
    ``*.bin`` and other pickle files are never downloaded.

    Raises:
        HubUnavailableError: the Hub is unreachable or ``HF_HUB_OFFLINE`` is set (checked first).
        ZooError: unknown subset or split, or the model list cannot be read.
    """
    subset = modelj_subset(subset)
    generative = subset in GENERATIVE_SUBSETS
    valid_splits = GENERATIVE_SPLITS if generative else DISCRIMINATIVE_SPLITS
    splits = list(splits or valid_splits)
    unknown = [split for split in splits if split not in valid_splits]
    if unknown:
        raise ZooError(f"Model-J {subset} has no split {unknown[0]!r}; its splits: {', '.join(valid_splits)}")
    endpoint = check_hub_reachable()
    root = Path(out_dir) / subset
    if generative:
        _download_generative(subset, root, splits, images, layers, endpoint, progress)
    else:
        jobs = []
        for split in splits:
            model_ids = modelj_model_ids(subset, split, endpoint=endpoint, cache_dir=Path(out_dir) / ".modelj-metadata")
            logger.info("Model-J %s %s: %d models", subset, split, len(model_ids))
            jobs += [(repo_id, root / split) for repo_id in model_ids]
        _download_model_repos(jobs, layers, endpoint, progress)
    return root


def download_repos(
    repo_ids: Sequence[str],
    out_dir: str | os.PathLike,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Path:
    """Download Hub model repos (e.g. fine-tunes of one base model) into ``out_dir``.

    Each repo lands in the Hugging Face cache layout under ``out_dir``
    (``models--<owner>--<name>/refs/main`` and ``snapshots/<revision>/``); pickle files are
    skipped. ``layers`` and ``progress`` work as in :func:`download_modelj`. Returns ``out_dir``.

    Raises:
        HubUnavailableError: the Hub is unreachable or ``HF_HUB_OFFLINE`` is set (checked first).
    """
    if not repo_ids:
        raise ZooError("no repo ids given; pass at least one Hub model repo such as 'owner/name'")
    endpoint = check_hub_reachable()
    out_dir = Path(out_dir)
    _download_model_repos([(repo_id, out_dir) for repo_id in repo_ids], layers, endpoint, progress)
    return out_dir


# --- download machinery -------------------------------------------------------------------------


def _download_model_repos(
    jobs: list[tuple[str, Path]],
    layers: Sequence[str] | None,
    endpoint: str,
    progress: Progress | None,
) -> None:
    """Download each ``(repo_id, cache_dir)`` in the Hugging Face cache layout."""

    def job(repo_id: str, cache_dir: Path) -> Callable[[], object]:
        if layers:
            return lambda: _download_repo_layers(repo_id, cache_dir, layers, endpoint)
        return lambda: _snapshot(repo_id, cache_dir, endpoint)

    _run_all([(repo_id, job(repo_id, cache_dir)) for repo_id, cache_dir in jobs], endpoint, progress)


def _run_all(
    jobs: list[tuple[str, Callable[[], object]]],
    endpoint: str,
    progress: Progress | None,
    max_workers: int = 4,
) -> None:
    """Run named download jobs a few at a time, each with retries.

    A job that fails for good (missing repo, bad file) is logged and skipped while the rest
    go on; if every job fails, or the Hub stops answering, the error is raised.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    failures: list[str] = []
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        futures = {pool.submit(_with_retries, work, name, endpoint): name for name, work in jobs}
        for done, future in enumerate(as_completed(futures), start=1):
            name = futures[future]
            try:
                future.result()
            except HubUnavailableError:
                for pending in futures:
                    pending.cancel()
                raise
            except ZooError as error:
                failures.append(str(error))
                logger.warning("skipped %s", error)
            if progress is not None:
                progress(done, len(jobs), name)
    if failures and len(failures) == len(jobs):
        raise ZooError(f"nothing could be downloaded; first failure: {failures[0]}")
    if failures:
        logger.warning("%d of %d downloads were skipped:\n  %s", len(failures), len(jobs), "\n  ".join(failures))


def _snapshot(repo_id: str, cache_dir: Path, endpoint: str, **patterns: object) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id,
        cache_dir=cache_dir,
        endpoint=endpoint,
        ignore_patterns=NEVER_DOWNLOAD + list(patterns.pop("extra_ignore", [])),
        tqdm_class=_quiet_tqdm(),
        max_workers=2,
        **patterns,
    )
    return Path(folder)


def _download_repo_layers(repo_id: str, cache_dir: Path, layers: Sequence[str], endpoint: str) -> None:
    """Small files of the repo as usual; of each safetensors file only the asked layers."""
    from probex.zoo.remote import RemoteSafetensors, hub_file_url

    snapshot = _snapshot(repo_id, cache_dir, endpoint, extra_ignore=["*.safetensors"])
    commit = snapshot.name
    for filename in _repo_files(repo_id, commit, endpoint, "*.safetensors"):
        target = snapshot / filename
        url = hub_file_url(repo_id, filename, revision=commit, endpoint=endpoint)
        _write_layers(RemoteSafetensors(url, headers=hub_auth_headers()), layers, target, f"{repo_id}@{commit}")


def _download_generative(
    subset: str,
    root: Path,
    splits: Sequence[str],
    images: bool,
    layers: Sequence[str] | None,
    endpoint: str,
    progress: Progress | None,
) -> None:
    """One repo ``ProbeX/Model-J__<subset>``, copied file by file into ``root``."""
    from huggingface_hub import hf_hub_download

    from probex.zoo.remote import RemoteSafetensors, hub_file_url

    repo_id = f"ProbeX/Model-J__{subset}"
    commit = _with_retries(lambda: _resolve_commit(repo_id, endpoint), repo_id, endpoint)
    patterns = [f"{split}/*/*.safetensors" for split in splits] + [f"{split}/*/*.json" for split in splits]
    if images:
        patterns += [f"{split}/*/training_images/*" for split in splits]
    files = _with_retries(lambda: _repo_files(repo_id, commit, endpoint, *patterns), repo_id, endpoint)
    if not files:
        raise ZooError(f"{repo_id}: no files for splits {', '.join(splits)} at revision {commit}")

    def job(filename: str) -> Callable[[], object]:
        if layers and filename.endswith(".safetensors"):
            url = hub_file_url(repo_id, filename, revision=commit, endpoint=endpoint)
            remote = lambda: RemoteSafetensors(url, headers=hub_auth_headers())  # noqa: E731
            return lambda: _write_layers(remote(), layers, root / filename, f"{repo_id}@{commit}")
        return lambda: hf_hub_download(
            repo_id, filename, revision=commit, local_dir=root, endpoint=endpoint, tqdm_class=_quiet_tqdm()
        )

    _run_all([(filename, job(filename)) for filename in files], endpoint, progress)


def _write_layers(remote, layers: Sequence[str], target: Path, origin: str) -> None:
    """Write the tensors of ``remote`` that match ``layers`` (names or module prefixes) to ``target``."""
    from safetensors.torch import save_file

    from probex.storage import atomic_path
    from probex.zoo.safefile import read_header

    names = _matching_tensors(list(remote.header.tensors), layers, remote.url)
    if target.exists():
        try:
            if set(names) <= set(read_header(target).tensors):
                return  # done by an earlier run
        except ZooError:
            pass  # a damaged earlier attempt: write it again
    tensors = remote.read_tensors(names)
    metadata = {**remote.header.metadata, "probex_layers_only": origin}
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    logger.info("%s: %d tensors, %d bytes transferred", target, len(tensors), remote.bytes_transferred)


def _matching_tensors(available: list[str], layers: Sequence[str], source: str) -> list[str]:
    """Tensor names equal to a layer, or inside a module named by one (``layer + '.'`` prefix)."""
    import difflib

    chosen: list[str] = []
    for layer in layers:
        found = [name for name in available if name == layer or name.startswith(layer + ".")]
        if not found:
            close = difflib.get_close_matches(layer, available, n=5, cutoff=0.5)
            raise ZooError(f"{source}: layer '{layer}' missing; closest available: {', '.join(close) or 'none'}")
        chosen += [name for name in found if name not in chosen]
    return chosen


def _resolve_commit(repo_id: str, endpoint: str, repo_type: str = "model") -> str:
    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint).repo_info(repo_id, repo_type=repo_type)
    return str(info.sha)


def _repo_files(repo_id: str, revision: str, endpoint: str, *patterns: str, repo_type: str = "model") -> list[str]:
    """Files of a repo at ``revision`` matching any of ``patterns`` (fnmatch), pickles excluded."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    files = HfApi(endpoint=endpoint).list_repo_files(repo_id, revision=revision, repo_type=repo_type)
    return sorted(filter_repo_objects(files, allow_patterns=list(patterns) or None, ignore_patterns=NEVER_DOWNLOAD))


def _read_modelj_table(subset: str, split: str, endpoint: str | None, cache_dir: str | os.PathLike | None) -> dict[str, list]:
    """The metadata table of one subset and split of the ``ProbeX/Model-J`` dataset, as columns.

    Looks for table files (parquet, csv, jsonl) whose path names the subset and the split, on
    the main branch and then on the Hub's automatic parquet conversion.
    """
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = endpoint or hub_endpoint()
    api = HfApi(endpoint=endpoint)
    seen: list[str] = []
    for revision in ("main", "refs/convert/parquet"):
        try:
            files = api.list_repo_files(MODELJ_DATASET, repo_type="dataset", revision=revision)
        except Exception as error:  # noqa: BLE001 - the conversion branch may not exist
            if _is_transient(error):
                raise
            logger.info("%s@%s: cannot list files (%s)", MODELJ_DATASET, revision, error)
            continue
        seen += files
        chosen = [name for name in files if _names_subset_and_split(name, subset, split)]
        if not chosen:
            continue
        columns: dict[str, list] = {}
        for name in sorted(chosen):
            local = hf_hub_download(
                MODELJ_DATASET, name, repo_type="dataset", revision=revision, cache_dir=cache_dir, endpoint=endpoint
            )
            for key, values in _read_table(Path(local)).items():
                columns.setdefault(key, []).extend(values)
        return columns
    raise ZooError(
        f"{MODELJ_DATASET}: no table for subset {subset!r}, split {split!r} "
        f"(files seen: {', '.join(seen[:10]) or 'none'}); use `probex download repos ID...` with the model ids instead"
    )


_TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")


def _names_subset_and_split(path: str, subset: str, split: str) -> bool:
    if not path.lower().endswith(_TABLE_SUFFIXES):
        return False
    # Split on "/", "-" and "." only: "val_holdout" stays one token and never matches "val".
    tokens = [token.lower() for token in re.split(r"[/.\-]", path)]
    return subset.lower() in tokens and split.lower() in tokens


def _read_table(path: Path) -> dict[str, list]:
    """A small table file as ``{column: values}``."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as parquet

        return parquet.read_table(path).to_pydict()
    if path.suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        import json

        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns


def _is_transient(error: BaseException) -> bool:
    """Network trouble or a server hiccup (worth a retry), as opposed to a missing repo."""
    try:
        import httpx2 as httpx  # the HTTP client of huggingface_hub >= 2
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    if isinstance(error, (ConnectionError, TimeoutError, httpx.TransportError, LocalEntryNotFoundError)):
        return True
    if isinstance(error, HfHubHTTPError):
        status = getattr(getattr(error, "response", None), "status_code", None)
        return status is not None and (status >= 500 or status == 429)
    return False


def _with_retries(work: Callable[[], T], what: str, endpoint: str) -> T:
    """Run ``work``, retrying transient failures with backoff; translate the final failure.

    Returns what ``work`` returns. Raises HubUnavailableError when the network stays down and
    ZooError for a permanent failure of this one item (missing repo, gated repo, bad file).
    """
    from huggingface_hub.errors import HfHubHTTPError

    for attempt in range(len(RETRY_DELAYS) + 1):
        try:
            return work()
        except (ZooError, HubUnavailableError) as error:
            if not isinstance(error, HubUnavailableError) or attempt == len(RETRY_DELAYS):
                raise
            last: BaseException = error
        except Exception as error:  # noqa: BLE001 - classified below
            if not _is_transient(error):
                if isinstance(error, HfHubHTTPError):
                    raise ZooError(f"{what}: {_first_line(error)}") from None
                raise
            last = error
        if attempt < len(RETRY_DELAYS):
            logger.warning("%s: %s; retrying in %g s", what, _first_line(last), RETRY_DELAYS[attempt])
            time.sleep(RETRY_DELAYS[attempt])
    if isinstance(last, HubUnavailableError):
        raise last
    raise hub_unreachable_error(endpoint, f"{what}: {_first_line(last)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _quiet_tqdm():
    """A tqdm class that draws nothing: probex reports progress through its own callback."""
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm
