"""Text from data shown as text: the one escaper of the app.

Streamlit renders Markdown in ``st.markdown``, ``st.title``, ``st.subheader``, ``st.caption``,
``st.info``/``warning``/``error``/``success`` and widget labels. A prompt from the address
(``?prompt=![x](http://host/pixel.png)``), a tree name from a manifest or a model id from a
file must not become an image fetched from a stranger's server, a link, a heading or a colour:
every such value goes through :func:`plain` where it is put into Markdown::

    st.subheader(f"Models for “{plain(prompt)}”")

The page's own Markdown around it (``**bold**``) still works.
"""

from __future__ import annotations

import re

from probex.errors import printable

# Every ASCII punctuation character that Markdown, GitHub's extensions, Streamlit's directives
# (``:red[...]``, ``:material/icon:``) or LaTeX (``$``) give a meaning; CommonMark lets each be
# escaped with a backslash.
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&=^\"'])")


def plain(text: object) -> str:
    """``text`` (any value from data) escaped so that Streamlit's Markdown shows it literally, on one line."""
    return _MARKDOWN.sub(r"\\\1", printable(text, one_line=True))
