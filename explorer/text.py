"""Text from data shown as text: the one escaper of the app, short headings and errors in plain words.

Streamlit renders Markdown in ``st.markdown``, ``st.title``, ``st.subheader``, ``st.caption``,
``st.info``/``warning``/``error``/``success`` and widget labels. A prompt from the address
(``?prompt=![x](http://host/pixel.png)``), a tree name from a manifest or a model id from a
file must not become an image fetched from a stranger's server, a link, a heading, a list, a
table or a formula: every such value goes through :func:`plain` where it is put into Markdown::

    st.subheader(f"Models for “{plain(prompt, 80)}”")

The page's own Markdown around it (``**bold**``) still works, and ordinary names stay as they
read (``cnn-attributes``, ``model_idx_0042``, ``model.safetensors``): only characters that could
start Markdown where they stand are escaped with a backslash (CommonMark's escape for ASCII
punctuation). Errors shown to a person go through :func:`plain_error` (no server paths, no raw
byte counts). Table cells and plotly hover text are not Markdown (probex's figures escape their
hover text).
"""

from __future__ import annotations

import re

from probex.errors import printable

# Anywhere: code, emphasis (*), links and images ([ ]), HTML and block quotes (< >), tables (|),
# strikethrough (~), formulas ($), entities (&), and what GitHub's autolinks start at (: @).
_ALWAYS = re.compile(r"([\\`*\[\]<>|~$&:@])")
# Underscores open or close emphasis only at a word's edge (snake_case names are left alone).
_EDGE_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# What makes a block when it starts the text: a heading, a list item, a thematic break.
_LEADING = re.compile(r"^(\s*)([#+\-=]|\d+[.)])")
_WWW = re.compile(r"(www)\.", re.IGNORECASE)
_BIG_NUMBER = re.compile(r"\b\d{10,}\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s/:'\"]+){2,}/?")


def plain(text: object, limit: int | None = None) -> str:
    """``text`` (any value from data) escaped so that Streamlit's Markdown shows it literally, on one line;
    cut to ``limit`` characters (the last one "…") when given (headings, captions)."""
    value = printable(text, one_line=True)
    if limit is not None:
        value = shorten(value, limit)
    escaped = _ALWAYS.sub(r"\\\1", value)
    escaped = _EDGE_UNDERSCORE.sub(r"\\_", escaped)
    escaped = _WWW.sub(r"\1\\.", escaped)
    return _LEADING.sub(lambda match: match.group(1) + "\\" + match.group(2) if not match.group(2)[0].isdigit()
                        else match.group(1) + match.group(2)[:-1] + "\\" + match.group(2)[-1], escaped)


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
