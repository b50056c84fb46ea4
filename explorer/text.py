"""Text from data shown as text: the one escaper of the app.

Streamlit renders Markdown in ``st.markdown``, ``st.title``, ``st.subheader``, ``st.caption``,
``st.info``/``warning``/``error``/``success`` and widget labels. A prompt from the address
(``?prompt=![x](http://host/pixel.png)``), a tree name from a manifest or a model id from a
file must not become an image fetched from a stranger's server, a link, a heading, a list, a
table or a formula: every such value goes through :func:`plain` where it is put into Markdown::

    st.subheader(f"Models for “{plain(prompt)}”")

The page's own Markdown around it (``**bold**``) still works, and ordinary names stay as they
read (``cnn-attributes``, ``model_idx_0042``, ``model.safetensors``): only characters that could
start Markdown where they stand are escaped with a backslash (CommonMark's escape for ASCII
punctuation).
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


def plain(text: object) -> str:
    """``text`` (any value from data) escaped so that Streamlit's Markdown shows it literally, on one line."""
    escaped = _ALWAYS.sub(r"\\\1", printable(text, one_line=True))
    escaped = _EDGE_UNDERSCORE.sub(r"\\_", escaped)
    escaped = _WWW.sub(r"\1\\.", escaped)
    return _LEADING.sub(lambda match: match.group(1) + "\\" + match.group(2) if not match.group(2)[0].isdigit()
                        else match.group(1) + match.group(2)[:-1] + "\\" + match.group(2)[-1], escaped)
