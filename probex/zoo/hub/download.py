"""Downloads from the Hub: Model-J subsets and users' repos, a few at a time, retried, resumable.

Every entry point checks, before any long work, that the Hub answers within a few seconds
(:func:`~probex.zoo.hub.reachability.check_hub_reachable`); offline (no network, or
``HF_HUB_OFFLINE=1``) it fails at once with a :class:`~probex.errors.HubUnavailableError`
whose one paragraph says how to work from files on disk instead.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from probex.errors import HubUnavailableError, ZooError
from probex.progress import Progress
from probex.zoo.hub.catalogue import (DISCRIMINATIVE_SPLITS, GENERATIVE_SPLITS, GENERATIVE_SUBSETS, modelj_model_ids,
                                      modelj_subset)
from probex.zoo.hub.environment import hub_auth_headers, hub_unreachable_error
from probex.zoo.hub.reachability import check_hub_reachable

T = TypeVar("T")

logger = logging.getLogger(__name__)

#: Pickle-based files are never fetched (Model-J ships ``training_args.bin``).
NEVER_DOWNLOAD = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]

#: Seconds to wait before each retry of a download that failed for a transient reason.
RETRY_DELAYS = (1.0, 4.0, 10.0)


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

    from probex.storage import is_relative_inside

    files = HfApi(endpoint=endpoint).list_repo_files(repo_id, revision=revision, repo_type=repo_type)
    leaving = [name for name in files if not is_relative_inside(name)]
    if leaving:  # names from the server become paths under the output folder: none may climb out of it
        raise ZooError(f"{repo_id}: the server lists file names that leave the download folder "
                       f"({leaving[0]!r}); refusing to download from it")
    return sorted(filter_repo_objects(files, allow_patterns=list(patterns) or None, ignore_patterns=NEVER_DOWNLOAD))


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
