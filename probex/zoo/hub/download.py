"""Downloads from the Hub: Model-J subsets and users' repos, a few at a time, retried, resumable, reported.

Every download works model by model and ends with a :class:`~probex.zoo.hub.journal.DownloadReport`
(downloaded, skipped with the reason, failed with the reason). Rate limits (429) and server
errors are retried after the server's ``Retry-After`` (:mod:`~probex.zoo.hub.retry`); a model
that still cannot be fetched does not stop the others, and when any model is missing at the end
:class:`~probex.zoo.hub.journal.DownloadIncompleteError` is raised, carrying the report. A rerun
of the same download fetches only what is missing, asking the Hub for nothing it already
answered (:mod:`~probex.zoo.hub.journal`).

The Hub is checked to answer within a few seconds before any long work
(:func:`~probex.zoo.hub.reachability.check_hub_reachable`); offline (no network, or
``HF_HUB_OFFLINE=1``) a download fails at once with a :class:`~probex.errors.HubUnavailableError`
whose one paragraph says how to work from files on disk, unless everything asked for is
already on disk.

Layers-only downloads (``layers=...``) read each weight file's header and then only the asked
tensors with HTTP range requests: two requests per SD LoRA model (the header, then the asked
layer's factors in one range); see :data:`FIRST_HEADER_BYTES`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from probex.errors import HubUnavailableError, ZooError
from probex.progress import Progress
from probex.zoo.hub.catalogue import (DISCRIMINATIVE_SPLITS, GENERATIVE_SPLITS, GENERATIVE_SUBSETS, modelj_model_ids,
                                      modelj_subset)
from probex.zoo.hub.environment import hub_auth_headers
from probex.zoo.hub.journal import ALREADY_PRESENT, DownloadIncompleteError, DownloadJournal, DownloadReport
from probex.zoo.hub.reachability import check_hub_reachable
from probex.zoo.hub.retry import first_line, with_retries

logger = logging.getLogger(__name__)

#: Pickle-based files are never fetched (Model-J ships ``training_args.bin``).
NEVER_DOWNLOAD = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.joblib"]

#: Models downloaded at once.
MAX_WORKERS = 4

#: Bytes asked for in the first request of a layers-only read: the whole header of a Model-J SD LoRA
#: (~40 kB) or ViT checkpoint (~25 kB) arrives at once. Larger headers (ResNet-101, ~70 kB) take a
#: second request in the first file only: from then on the largest header seen is asked for.
FIRST_HEADER_BYTES = 64 * 1024

#: Bytes asked beyond the largest header seen (the next files' metadata differ a little).
HEADER_SLACK = 2048


def download_modelj(
    subset: str,
    out_dir: str | os.PathLike,
    splits: Sequence[str] | None = None,
    images: bool = False,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DownloadReport:
    """Download a Model-J subset into ``out_dir/<subset>``; the report names that folder (``report.root``).

    Discriminative subsets (SupViT, DINO, MAE, ResNet) land in the Hugging Face cache layout,
    one folder per split: ``<subset>/<split>/models--ProbeX--Model-J__<subset>__model_idx_XXXX``.
    Generative subsets (SD_200, SD_1k) are one repo, copied as is:
    ``<subset>/<split>/model_idx_XXXX/pytorch_lora_weights.safetensors`` (and
    ``training_images/`` with ``images=True``).

    Args:
        splits: the splits to fetch (default: all of the subset's splits).
        images: also fetch the training images (generative subsets).
        layers: fetch only these tensors (names, module prefixes such as
            ``unet.down_blocks.2.attentions.1.transformer_blocks.0.attn2.to_q``, or the paper's
            layer numbers such as ``"46"``) with HTTP range requests, instead of whole weight
            files; the files written hold just them.
        progress: ``progress(done, total, message)`` after each model.

    ``*.bin`` and other pickle files are never downloaded.

    Raises:
        HubUnavailableError: the Hub is unreachable or ``HF_HUB_OFFLINE`` is set (checked first).
        DownloadIncompleteError: some models could not be fetched (``error.report`` says which);
            the others are on disk.
        ZooError: unknown subset or split, or the model list cannot be read.
    """
    subset = modelj_subset(subset)
    generative = subset in GENERATIVE_SUBSETS
    valid_splits = GENERATIVE_SPLITS if generative else DISCRIMINATIVE_SPLITS
    splits = list(splits or valid_splits)
    unknown = [split for split in splits if split not in valid_splits]
    if unknown:
        raise ZooError(f"Model-J {subset} has no split {unknown[0]!r}; its splits: {', '.join(valid_splits)}")
    session = _Session(Path(out_dir) / subset, f"Model-J {subset}", layers)
    if generative:
        jobs = _generative_jobs(session, subset, splits, images)
    else:
        jobs = []
        for split in splits:
            model_ids = session.listing(
                f"models {subset}/{split}",
                lambda split=split: modelj_model_ids(subset, split, endpoint=session.endpoint,
                                                     cache_dir=Path(out_dir) / ".modelj-metadata"),
            )
            logger.info("Model-J %s %s: %d models", subset, split, len(model_ids))
            jobs += [_repo_job(session, repo_id, session.root / split, f"{split}/{repo_id}") for repo_id in model_ids]
    return session.run(jobs, progress)


def download_repos(
    repo_ids: Sequence[str],
    out_dir: str | os.PathLike,
    layers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> DownloadReport:
    """Download Hub model repos (e.g. fine-tunes of one base model) into ``out_dir``.

    Each repo lands in the Hugging Face cache layout under ``out_dir``
    (``models--<owner>--<name>/refs/main`` and ``snapshots/<revision>/``); pickle files are
    skipped. ``layers`` and ``progress`` work as in :func:`download_modelj`, and so do the
    report and the errors.
    """
    if not repo_ids:
        raise ZooError("no repo ids given; pass at least one Hub model repo such as 'owner/name'")
    session = _Session(Path(out_dir), f"{len(repo_ids)} Hub repo{'s' if len(repo_ids) != 1 else ''}", layers)
    return session.run([_repo_job(session, repo_id, session.root, repo_id) for repo_id in repo_ids], progress)


# --- one download run -----------------------------------------------------------------------------


@dataclass
class _Job:
    """One model to fetch: ``work()`` fetches it (retrying what it asks the Hub) and returns the files that make it up."""

    item: str
    what: str
    work: Callable[[], list[Path]]


class _NotAttempted(Exception):
    pass


class _Session:
    """One run of a download: its folder, journal, the Hub's address (checked once, when first needed)."""

    def __init__(self, root: Path, what: str, layers: Sequence[str] | None):
        self.root = root
        self.what = what
        self.layers = [str(layer) for layer in layers] if layers else None
        self.journal = DownloadJournal(root)
        self.header_bytes = FIRST_HEADER_BYTES  # grows to the largest header seen, so headers arrive in one request
        self._endpoint: str | None = None
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        if self._endpoint is None:
            self._endpoint = check_hub_reachable()
        return self._endpoint

    @property
    def layers_key(self) -> str:
        return "layers " + json.dumps(sorted(self.layers)) if self.layers else "whole files"

    def listing(self, key: str, fetch: Callable[[], object]):
        """A listing from the journal, else fetched from the Hub (with retries) and kept in the journal."""
        kept = self.journal.listing(key)
        if kept is not None:
            return kept
        value = with_retries(fetch, key, self.endpoint)
        self.journal.keep_listing(key, value)
        return value

    def received(self, count: int, header_bytes: int | None = None) -> None:
        with self._lock:
            self._bytes += count
            if header_bytes is not None:
                self.header_bytes = max(self.header_bytes, header_bytes + HEADER_SLACK)

    def run(self, jobs: list[_Job], progress: Progress | None) -> DownloadReport:
        """Fetch every job not finished before, a few at a time; the report, or DownloadIncompleteError."""
        report = DownloadReport(self.root, self.what)
        pending = []
        for job in jobs:
            if self.journal.finished(job.item, job.what):
                report.skipped.append((job.item, ALREADY_PRESENT))
            else:
                pending.append(job)
        done = len(report.skipped)
        if progress is not None and done:
            progress(done, len(jobs), f"{done} already present")
        if pending:
            self.endpoint  # noqa: B018 - fail fast, before any long work, when the Hub cannot be used
        outcome: dict[str, str | None] = {}
        stop = threading.Event()
        hub_error: list[str] = []

        def attempt(job: _Job) -> None:
            if stop.is_set():
                raise _NotAttempted
            self.journal.finish(job.item, job.what, job.work())

        with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool:
            futures = {pool.submit(attempt, job): job for job in pending[:1]}
            if self.layers and futures:  # the first header tells the size to ask for from the next files on
                next(iter(futures)).exception()
            futures.update({pool.submit(attempt, job): job for job in pending[1:]})
            for future in as_completed(futures):
                job = futures[future]
                try:
                    future.result()
                    outcome[job.item] = None
                except _NotAttempted:
                    outcome[job.item] = f"not attempted: the Hub stopped answering ({hub_error[0]})"
                except HubUnavailableError as error:
                    stop.set()
                    hub_error.append(first_line(error))
                    outcome[job.item] = str(error).splitlines()[0]
                except ZooError as error:
                    outcome[job.item] = str(error)  # in the report; the caller decides how to say it
                done += 1
                if progress is not None:
                    progress(done, len(jobs), job.item)
        for job in pending:  # in the order asked, not the order finished
            if outcome.get(job.item) is None:
                report.downloaded.append(job.item)
            else:
                report.failed.append((job.item, outcome[job.item]))
        report.bytes_received = self._bytes
        logger.info("%s", report.summary())
        if report.failed:
            raise DownloadIncompleteError(report)
        return report


# --- what each kind of download fetches -------------------------------------------------------


def _repo_job(session: _Session, repo_id: str, cache_dir: Path, item: str) -> _Job:
    """A model repo in the Hugging Face cache layout under ``cache_dir`` (whole, or only the asked layers)."""

    def work() -> list[Path]:
        endpoint = session.endpoint
        if session.layers:
            snapshot = with_retries(lambda: _snapshot(repo_id, cache_dir, endpoint, extra_ignore=["*.safetensors"]),
                                    repo_id, endpoint)
            names = with_retries(lambda: _repo_files(repo_id, snapshot.name, endpoint, "*.safetensors"), repo_id, endpoint)
            for filename in names:
                _write_layers(session, repo_id, snapshot.name, filename, snapshot / filename)
        else:
            snapshot = with_retries(lambda: _snapshot(repo_id, cache_dir, endpoint), repo_id, endpoint)
            session.received(sum(path.stat().st_size for path in snapshot.rglob("*") if path.is_file()))
        files = [path for path in snapshot.rglob("*") if path.is_file()]
        if not any(path.suffix == ".safetensors" for path in files):
            raise ZooError(f"{repo_id}: no .safetensors weights in the repo (pickle files such as *.bin are never fetched)")
        return files + [snapshot.parents[1] / "refs" / "main"]

    return _Job(item, session.layers_key, work)


def _generative_jobs(session: _Session, subset: str, splits: Sequence[str], images: bool) -> list[_Job]:
    """One job per model folder of the repo ``ProbeX/Model-J__<subset>``, copied file by file."""
    repo_id = f"ProbeX/Model-J__{subset}"
    commit = session.listing(f"commit {repo_id}", lambda: _resolve_commit(repo_id, session.endpoint))
    patterns = [f"{split}/*/*.safetensors" for split in splits] + [f"{split}/*/*.json" for split in splits]
    if images:
        patterns += [f"{split}/*/training_images/*" for split in splits]
    files = session.listing(f"files {repo_id}@{commit} {' '.join(patterns)}",
                            lambda: _repo_files(repo_id, commit, session.endpoint, *patterns))
    if not files:
        raise ZooError(f"{repo_id}: no files for splits {', '.join(splits)} at revision {commit}")
    by_model: dict[str, list[str]] = {}
    for filename in files:
        by_model.setdefault("/".join(filename.split("/")[:2]), []).append(filename)
    what = session.layers_key + (" with images" if images else "")

    def job(model: str, filenames: list[str]) -> _Job:
        # each request retried on its own, so a rate limit never costs what was already fetched
        def fetch(filename: str) -> Path:
            if session.layers and filename.endswith(".safetensors"):
                return _write_layers(session, repo_id, commit, filename, session.root / filename)
            from huggingface_hub import hf_hub_download

            path = with_retries(lambda: Path(hf_hub_download(repo_id, filename, revision=commit, local_dir=session.root,
                                                             endpoint=session.endpoint, tqdm_class=_quiet_tqdm())),
                                filename, session.endpoint)
            session.received(path.stat().st_size)
            return path

        return _Job(model, what, lambda: [fetch(filename) for filename in filenames])

    return [job(model, filenames) for model, filenames in by_model.items()]


def _write_layers(session: _Session, repo_id: str, commit: str, filename: str, target: Path) -> Path:
    """Write the tensors of one remote file that match the asked layers to ``target``; skip it when done before."""
    from safetensors.torch import save_file

    from probex.storage import atomic_path
    from probex.zoo.modelj_layers import PAPER_LAYERS_KEY, paper_layer_numbers
    from probex.zoo.remote import RemoteSafetensors, hub_file_url
    from probex.zoo.safefile import read_header

    origin, asked = f"{repo_id}@{commit}/{filename}", json.dumps(sorted(session.layers or []))
    if target.exists():
        try:
            metadata = read_header(target).metadata
            if metadata.get("probex_layers_only") == origin and metadata.get("probex_layers_asked") == asked:
                return target  # written by an earlier attempt
        except ZooError:
            pass  # a damaged earlier attempt: write it again
    url = hub_file_url(repo_id, filename, revision=commit, endpoint=session.endpoint)
    # the header and the tensors retried apart: a rate limit on the second costs no second header
    remote = with_retries(lambda: RemoteSafetensors(url, headers=hub_auth_headers(), first_request_bytes=session.header_bytes),
                          filename, session.endpoint)
    names = _matching_tensors(remote.header, session.layers or [], remote.url)
    tensors = with_retries(lambda: remote.read_tensors(names), filename, session.endpoint)
    numbers = {name: number for name, number in paper_layer_numbers(remote.header).items()
               if any(kept == name or kept.startswith(name + ".") for kept in names)}
    metadata = {**remote.header.metadata, "probex_layers_only": origin, "probex_layers_asked": asked}
    if numbers:
        metadata[PAPER_LAYERS_KEY] = json.dumps(numbers, sort_keys=True)
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    session.received(remote.bytes_transferred, header_bytes=remote.header.data_offset)
    logger.info("%s: %d tensors, %d bytes in %d requests", target, len(tensors), remote.bytes_transferred, remote.requests_made)
    return target


def _matching_tensors(header, layers: Sequence[str], source: str) -> list[str]:
    """Tensor names equal to a layer, or inside a module named by one (``layer + '.'`` prefix); paper numbers resolved."""
    import difflib

    from probex.zoo.modelj_layers import resolve_layer

    available = list(header.tensors)
    chosen: list[str] = []
    for asked in layers:
        layer = resolve_layer(header, asked)
        found = [name for name in available if name == layer or name.startswith(layer + ".")]
        if not found:
            close = difflib.get_close_matches(layer, available, n=5, cutoff=0.5)
            raise ZooError(f"{source}: layer '{layer}' missing; closest available: {', '.join(close) or 'none'}")
        chosen += [name for name in found if name not in chosen]
    return chosen


# --- the Hub's API, through huggingface_hub ------------------------------------------------------


def _snapshot(repo_id: str, cache_dir: Path, endpoint: str, extra_ignore: Sequence[str] = ()) -> Path:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(
        repo_id,
        cache_dir=cache_dir,
        endpoint=endpoint,
        ignore_patterns=NEVER_DOWNLOAD + list(extra_ignore),
        tqdm_class=_quiet_tqdm(),
        max_workers=2,
    )
    return Path(folder)


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


def _quiet_tqdm():
    """A tqdm class that draws nothing: probex reports progress through its own callback."""
    from tqdm.auto import tqdm

    class QuietTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return QuietTqdm
