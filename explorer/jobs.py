"""Long work in the background: training an expert or sweeping a tree's layers keeps running when the page is left.

A :class:`Job` runs in a thread of the server process and is kept in the session's state, so it
survives page changes; the Experts page polls it (``st.fragment(run_every=...)``) to draw progress,
an estimate of the time left, and a Cancel button. The thread never calls Streamlit: it writes
its progress into the Job, and the page reads it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

JOBS_KEY = "background_jobs"  # session_state: (population, tree, kind) -> Job


class Cancelled(Exception):
    """Raised inside a job's progress callback once Cancel was pressed (the work stops at its next step)."""


@dataclass
class Job:
    """One piece of background work and what it has reported so far."""

    kind: str  # "train" or "sweep"
    title: str
    done: int = 0
    total: int = 0
    message: str = ""
    history: list = field(default_factory=list)  # progress logs (e.g. one EpochLog per epoch)
    result: Any = None
    error: Optional[str] = None
    started: float = field(default_factory=time.monotonic)
    finished: Optional[float] = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    thread: Optional[threading.Thread] = field(default=None, repr=False)
    collected: bool = False  # the page has taken the result

    @property
    def running(self) -> bool:
        return self.finished is None

    def progress(self, done: int, total: int, log: Any = "") -> None:
        """The callback handed to probex: records progress, and stops the work once cancelled."""
        if self.cancel.is_set():
            raise Cancelled(self.title)
        self.done, self.total = int(done), int(total)
        self.message = str(log)
        if not isinstance(log, str):
            self.history.append(log)

    def eta(self) -> Optional[float]:
        """Seconds left at the pace so far (None before the first step)."""
        if not self.running or self.done <= 0 or self.total <= 0:
            return None
        elapsed = time.monotonic() - self.started
        return elapsed / self.done * max(self.total - self.done, 0)


def start(jobs: dict, key: tuple, kind: str, title: str, work: Callable[[Job], Any], threads: int = 1) -> Job:
    """Run ``work(job)`` in a daemon thread (with ``threads`` torch threads) and keep the Job under ``key``."""
    job = Job(kind=kind, title=title)

    def run() -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))  # a thread's own setting: not inherited from the page's
        try:
            job.result = work(job)
        except Cancelled:
            job.error = "cancelled"
        except Exception as error:  # reported in the page, in plain words
            logger.exception("background %s failed", kind)
            job.error = str(error) or type(error).__name__
        finally:
            job.finished = time.monotonic()

    job.thread = threading.Thread(target=run, name=f"probex-{kind}", daemon=True)
    jobs[key] = job
    job.thread.start()
    return job


def format_seconds(seconds: Optional[float]) -> str:
    """"42 s", "3 min 5 s", or "estimating ..." when unknown."""
    if seconds is None:
        return "estimating ..."
    seconds = int(round(seconds))
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60} s"
