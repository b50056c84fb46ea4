"""Progress reporting: the library calls ``progress(done, total, message)``; front ends render it.

Long work in probex (building a layer bank, training an expert, a sweep) takes an optional
callback with that signature. ``message`` is a short text, or a record whose ``str()`` is one
(training passes an ``EpochLog``, so an app can also draw live curves from it). The CLI and
notebooks turn it into a tqdm bar with :func:`tqdm_progress`; the app into ``st.progress``.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

Progress = Callable[[int, int, object], None]


@contextmanager
def tqdm_progress(description: str, unit: str = "it", disable: Optional[bool] = None) -> Iterator[Progress]:
    """A callback drawing a tqdm bar, closed when the block ends::

        with tqdm_progress("training") as progress:
            expert.fit(X, y, progress=progress)
    """
    from tqdm.auto import tqdm

    from probex.errors import printable

    bar = None
    description = printable(description, one_line=True)  # names from files never reach the terminal raw

    def update(done: int, total: int, message: object = "") -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=description, unit=unit, disable=disable)
        bar.total = total
        bar.n = done
        if message:
            bar.set_postfix_str(printable(message, one_line=True), refresh=False)
        bar.refresh()

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
