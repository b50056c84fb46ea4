"""The view in the address: widgets start from the query string and write back to it, so any view can be shared.

A page calls :func:`restore` before drawing a widget (its value from the address on a shared
link, else from this session's last visit to the page) and :func:`keep` after it (remembered for
the next visit, and written into the address). Streamlit forgets a widget's value when its page
is left; the remembered copy is what brings a tree box or a colour back when the user returns.

Parameters: ``page`` (the frame), ``model``, ``tree``, ``prompt``, ``k``, ``mode``, ``colour``,
``shape``, ``find`` (the highlight), ``sel`` (a selection, as compact row ranges).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence
from urllib.parse import quote

import streamlit as st

from explorer.text import shorten

_KEEP = "_kept_"
#: Free text (prompts) is cut to this many characters in the address.
MAX_TEXT = 200
#: A selection longer than this (as ranges) is left out of the address (browsers and servers cut long ones).
MAX_SELECTION = 6000


def restore(key: str, param: Optional[str] = None, parse: Callable[[str], Any] = str,
            choices: Optional[Sequence] = None, default: Any = None) -> None:
    """Give widget ``key`` its value when its page is entered: from the address (a shared link; leaving a
    page clears the address), else from the last visit, else ``default`` (values outside ``choices`` are ignored)."""
    if key in st.session_state:
        return
    candidates = []
    if param is not None and param in st.query_params:
        try:
            candidates.append(parse(st.query_params[param]))
        except (TypeError, ValueError):
            pass
    if _KEEP + key in st.session_state:
        candidates.append(st.session_state[_KEEP + key])
    candidates.append(default)
    for value in candidates:
        if value is not None and (choices is None or value in choices):
            st.session_state[key] = value
            return


def keep(key: str, param: Optional[str] = None, default: Any = None, text: Callable[[Any], str] = str) -> Any:
    """Remember widget ``key``'s value for the next visit and write it into the address (left out when
    it is the default). Returns the value."""
    value = st.session_state.get(key)
    st.session_state[_KEEP + key] = value
    if param is not None:
        put(param, None if value == default else value, text)
    return value


def put(param: str, value: Any, text: Callable[[Any], str] = str, limit: Optional[int] = MAX_TEXT) -> None:
    """Set ``param`` in the address (cut to ``limit`` characters), or remove it when ``value`` is None."""
    if value is None or value == "":
        st.query_params.pop(param, None)
        return
    written = text(value) if limit is None else shorten(text(value), limit)
    if st.query_params.get(param) != written:
        st.query_params[param] = written


def model_href(model_id: str) -> str:
    """The relative address of a model's page (``model?model=ID``)."""
    return "./model?model=" + quote(model_id, safe="/")


def put_selection(rows: Sequence[int]) -> bool:
    """Put a selection in the address as ``sel``; False (and none there) when it is too long to share."""
    encoded = encode_rows(rows) if rows else ""
    if len(encoded) > MAX_SELECTION:
        st.query_params.pop("sel", None)
        return False
    put("sel", encoded or None, limit=None)
    return True


def encode_rows(rows: Iterable[int]) -> str:
    """Rows as compact ranges: [0, 1, 2, 5, 7, 8] -> "0-2.5.7-8"."""
    ordered = sorted(set(int(row) for row in rows))
    parts, start = [], None
    for number, row in enumerate(ordered):
        if start is None:
            start = row
        if number + 1 == len(ordered) or ordered[number + 1] != row + 1:
            parts.append(str(start) if start == row else f"{start}-{row}")
            start = None
    return ".".join(parts)


def decode_rows(text: str, n: int) -> list[int]:
    """The rows of :func:`encode_rows` text, those below ``n`` (ValueError on malformed text)."""
    rows: set[int] = set()
    for part in filter(None, str(text).split(".")):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if low < 0 or high < low or high - low > 1_000_000:
            raise ValueError(f"bad range {part!r}")
        rows.update(range(low, min(high, n - 1) + 1))
    return sorted(rows)
