"""The sidebar shared by every page: which population to explore (with recent folders), and where training runs."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import streamlit as st

from explorer.state import DEVICE_KEY, POPULATION_KEY, freeze_long_lived, population_path
from explorer.text import plain

logger = logging.getLogger(__name__)

DEMO = "Demo jungle (shipped)"
LOCAL = "A local zoo folder"
THREADS_KEY = "torch_threads"
RECENT_LIMIT = 8


@st.cache_data(ttl=60, show_spinner=False)
def cache_caption(folder: str, cap: str) -> str:
    """The cache's size against its cap, measured at most once a minute (keyed on $PROBEX_CACHE and the cap)."""
    from probex.cache import cache_limit_bytes, cache_usage

    used = sum(row["bytes"] for row in cache_usage().values()) / 1e9
    try:
        limit = cache_limit_bytes()
    except ValueError as error:
        return f"Cache: {used:.2g} GB, no cap ({error})"
    if limit is None:
        return f"Cache: {used:.2g} GB, no cap ($PROBEX_CACHE_MAX_GB=off)"
    return (f"Cache: {used:.2g} of {limit / 1e9:g} GB; the least recently used entries are evicted above the cap "
            "($PROBEX_CACHE_MAX_GB)")


@st.cache_resource
def devices() -> list[str]:
    """The devices experts can train on here: the CPU, every CUDA GPU, and Apple's MPS when present."""
    import torch

    found = ["cpu"] + [f"cuda:{number}" for number in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def recent_file() -> Path:
    """Where the recently opened zoo folders are kept (the probex cache folder)."""
    from probex.storage import cache_dir

    return cache_dir("explorer") / "recent_zoos.json"


def recent_folders() -> list[str]:
    try:
        folders = json.loads(recent_file().read_text(encoding="utf-8"))
        return [str(folder) for folder in folders if isinstance(folder, str)][:RECENT_LIMIT]
    except (OSError, ValueError):
        return []


def remember_folder(folder: str) -> None:
    """Put ``folder`` first among the recent zoo folders (best effort: a read-only cache only loses the list)."""
    from probex.storage import atomic_write_bytes

    folders = [folder] + [known for known in recent_folders() if known != folder]
    try:
        recent_file().parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(recent_file(), json.dumps(folders[:RECENT_LIMIT]).encode("utf-8"))
    except OSError as error:
        logger.warning("cannot remember the recent zoo folders: %s", error)


def draw() -> Any:
    """The population part now; returns the place of the compute part, which :func:`draw_compute` fills after the
    page (it needs torch, whose import took seconds a map read from disk does not need)."""
    with st.sidebar:
        st.subheader("Population")
        current = population_path()
        choice = st.radio("Models to explore", (DEMO, LOCAL), index=1 if current else 0, key="population_choice",
                          help="The demo jungle ships with probex. A local zoo is a folder with a probex "
                               "manifest or a Model-J layout (downloaded with `probex download`).")
        if choice == LOCAL:
            recent = recent_folders()
            if recent:
                picked = st.selectbox("Recent zoo folders", recent, index=None, key="recent_folder",
                                      placeholder="Pick a folder opened before")
                if picked and picked != st.session_state.get("population_folder"):
                    st.session_state["population_folder"] = picked
            folder = st.text_input("Zoo folder", value=current, key="population_folder",
                                   placeholder="/path/to/zoo", help="The zoo's root folder on this machine.")
            st.session_state[POPULATION_KEY] = folder.strip()
            if not folder.strip():
                st.caption("Type a folder; until then the demo jungle is shown.")
            elif Path(folder.strip()).expanduser().is_dir() and folder.strip() not in recent[:1]:
                remember_folder(folder.strip())
        else:
            st.session_state[POPULATION_KEY] = ""
        return st.container()


@st.cache_resource(show_spinner=False)
def _torch_import() -> threading.Thread:
    """Once per process, after the first page: import torch in a background thread, so
    that a page that does not need torch (a map read from disk) is not kept waiting seconds for it; the compute
    controls wait for it instead."""
    def run() -> None:  # torch alone: $PROBEX_THREADS is applied by draw_compute, in the script's thread
        import torch  # noqa: F401

        freeze_long_lived()

    thread = threading.Thread(target=run, name="probex-torch-import", daemon=True)
    thread.start()
    return thread


def torch_loaded() -> bool:
    """Whether torch is imported (completely: a module being imported is marked ``__spec__._initializing``)."""
    module = sys.modules.get("torch")
    return module is not None and not getattr(getattr(module, "__spec__", None), "_initializing", False)


def apply_threads() -> None:
    """Before the page: apply the thread box's count when torch is loaded (else draw_compute does, when it is)."""
    threads = st.session_state.get(THREADS_KEY)
    if threads and torch_loaded():
        sys.modules["torch"].set_num_threads(int(threads))


def draw_compute(place: Any) -> None:
    """Device and threads for training, in ``place`` (from :func:`draw`), once torch is loaded (until then a line
    says so and the app reruns when it is); the thread count is applied to torch at once."""
    with place:
        if not torch_loaded() and _torch_import().is_alive():  # started after the page, not competing with it
            st.fragment(_wait_for_torch, run_every=1.0)()
            return
        import torch

        if THREADS_KEY not in st.session_state:  # the thread box starts from $PROBEX_THREADS
            try:
                from probex.experts.training import set_threads

                set_threads()
            except ValueError as error:
                st.warning(f"{plain(error)}; training uses torch's default threads.")
        _compute_controls(torch)


def _wait_for_torch() -> None:
    if _torch_import().is_alive():
        st.subheader("Compute")
        st.caption("Loading torch for the device and thread controls ...")
    else:
        st.rerun()


def _compute_controls(torch: Any) -> None:
    st.subheader("Compute")
    options = devices()
    if st.session_state.get(DEVICE_KEY) not in options:
        st.session_state[DEVICE_KEY] = options[1] if len(options) > 1 else options[0]
    st.selectbox("Train on", options, key=DEVICE_KEY,
                 help="Where experts trained on the Experts page run. Search and the maps run on the CPU.")
    if THREADS_KEY not in st.session_state:
        st.session_state[THREADS_KEY] = max(1, torch.get_num_threads())  # set from $PROBEX_THREADS by the frame
    threads = st.number_input("CPU threads", 1, max(os.cpu_count() or 1, 1), key=THREADS_KEY, step=1,
                              help="torch threads for training and for the pages' computations "
                                   "($PROBEX_THREADS sets the first value).")
    torch.set_num_threads(int(threads))
    st.caption(f"Training on **{plain(st.session_state[DEVICE_KEY])}** with {int(threads)} CPU "
               f"thread{'s' if int(threads) > 1 else ''}.")
    st.caption(cache_caption(os.environ.get("PROBEX_CACHE", ""), os.environ.get("PROBEX_CACHE_MAX_GB", "")))
