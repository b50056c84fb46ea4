"""Text from data, shown safely and plainly: escaped for Markdown, shortened, and errors without server paths.

Every name that comes from data or from the address (model ids, concepts, prompts, tree names,
metadata) goes through :func:`plain` before it reaches ``st.markdown``, ``st.caption``, a heading
or an alert, so that it is shown as typed: no Markdown, no HTML, no Streamlit directives
(``:red[...]``, ``:material/...:``) and no LaTeX from data. Table cells and plotly hover text are
not Markdown and need no escaping here (probex's figures escape their hover text).
"""

from __future__ import annotations

import re

# CommonMark lets a backslash escape any ASCII punctuation; these are the characters Markdown,
# Streamlit's directives (":" and "[...]"), LaTeX ("$") and HTML ("<", "&") give a meaning anywhere
# in a line. "-", "+" and "1." mean something only at a line's start (a list): escaped there only.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|<>~$:&^])")
_LINE_START = re.compile(r"^([-+]|\d+(?=[.)]))")
_BIG_NUMBER = re.compile(r"\b\d{10,}\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/:'\"]+){2,}/?")


def plain(text: object, limit: int | None = None) -> str:
    """``text`` escaped for Markdown, on one line, cut to ``limit`` characters with "…" when given."""
    value = " ".join(str(text).split())
    if limit is not None:
        value = shorten(value, limit)
    return _LINE_START.sub(lambda match: "\\" + match.group(0) if match.group(0) in "-+" else match.group(0) + "\\",
                           _SPECIAL.sub(r"\\\1", value))


def shorten(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters (the last one "…" when cut)."""
    value = " ".join(str(text).split())
    return value if len(value) <= limit else value[: max(limit - 1, 0)].rstrip() + "…"


def plain_error(error: object) -> str:
    """An error message for a person: no server paths (a file is named by its last part), no raw
    huge byte counts, escaped for Markdown."""
    message = str(error)
    message = _PATH.sub(lambda match: _last_part(match.group(0)), message)
    message = re.sub(r"header length \d+ bytes exceeds[^;.]*", "its header is damaged or it is not a safetensors file",
                     message)
    message = _BIG_NUMBER.sub("an impossible number of", message)
    return plain(message)


def _last_part(path: str) -> str:
    parts = [part for part in path.split("/") if part]
    return parts[-1] if parts else path
