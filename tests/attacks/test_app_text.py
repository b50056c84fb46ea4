"""Family 6: the app shows prompts and names as text, never as Markdown or HTML.

A generator of hostile texts (images that would be fetched from a stranger's server, links,
HTML, headings, Streamlit colour directives and icons, LaTeX, control characters) goes through
``explorer.text.plain``; rendered by a CommonMark renderer with links, tables and strikethrough
on, each comes out as one paragraph of exactly its own text. Then the search page is opened from
a shared address whose prompt is an image, on a zoo whose ids and labels are hostile too.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from explorer.text import plain
from probex.errors import printable

HOSTILE_TEXTS = [
    "![x](http://host/pixel.png)", "[click](http://host/)", "<img src=x onerror=alert(1)>", "<script>alert(1)</script>",
    "# heading", "## sub", "> quote", "- item", "1. item", "**bold**", "__bold__", "*em*", "_em_", "~~strike~~",
    "`code`", "```fence", "| a | b |", "---", "===", ":red[red text]", ":material/home:", ":smile:", "$x^2$",
    "$$\\int$$", "\\", "\\*", "&lt;b&gt;", "&amp;", "http://host/autolink.png", "<http://host/>", "a\nb", "a\n\n# b",
    "\x1b[31mred\x1b[0m", "right\u202eto left", "[ref]: http://host/", "![ref][ref]", "a  \nb", "{curly}", "(paren)",
    "+ plus", "1) item", "tab\tbed", "trailing\\", "under_score_name", "model_idx_0042", "runwayml/stable-diffusion-v1-5",
]


def _render(markdown: str) -> str:
    return MarkdownIt("commonmark").enable(["table", "strikethrough", "linkify"] if _has_linkify() else
                                          ["table", "strikethrough"]).render(markdown)


def _has_linkify() -> bool:
    try:
        import linkify_it  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_plain_text_renders_as_exactly_itself_in_one_paragraph(text):
    rendered = _render(plain(text)).strip()
    assert re.fullmatch(r"<p>[^<>]*</p>", rendered), (text, rendered)
    assert html.unescape(rendered[3:-4]) == printable(text, one_line=True)


def test_the_hostile_text_generator_is_large_enough():
    assert len(HOSTILE_TEXTS) >= 45


def _mini_jungle_with_hostile_names(folder: Path) -> Path:
    """A few models of each split of the shipped jungle's mini-sd tree, some renamed and relabelled hostilely."""
    from probex import jungle

    shipped = jungle.SHIPPED
    for name in ("generative", "experts", "sweeps", "check.json", "recommended_layers.json"):
        if (shipped / name).exists():
            (folder / name).symlink_to(shipped / name)
    manifest = json.loads((shipped / "probex_zoo.json").read_text())
    kept, counts = [], {}
    for entry in manifest["models"]:
        if entry["tree"] == "mini-sd" and counts.get(entry["split"], 0) < 12:
            counts[entry["split"]] = counts.get(entry["split"], 0) + 1
            kept.append(entry)
    for number, entry in enumerate(kept[:6]):
        entry["id"] = f"![id{number}](http://host/id.png)"
        entry["labels"] = [f"[label{number}](http://host/) <b>x</b>"]
    manifest.update(models=kept, name="![zoo](http://host/zoo.png)")
    (folder / "probex_zoo.json").write_text(json.dumps(manifest))
    return folder


def test_a_shared_address_with_an_image_prompt_shows_it_as_text(tmp_path):
    from probex import jungle
    from streamlit.testing.v1 import AppTest

    if not (jungle.SHIPPED / "probex_zoo.json").is_file():
        pytest.skip("the shipped demo jungle is not built here")
    population = _mini_jungle_with_hostile_names(tmp_path)
    app = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "explorer" / "app.py"), default_timeout=180)
    app.session_state["population_path"] = str(population)
    app.query_params.update(page="search", prompt="![x](http://host/pixel.png)")
    app.run()
    assert not app.exception, app.exception
    shown = [element.value for kind in ("title", "subheader", "markdown", "caption", "error", "success", "info", "warning")
             for element in getattr(app, kind)]
    assert any("pixel" in value for value in shown)  # the prompt is on the page ...
    for value in shown:  # ... and nothing on it is an image, nor a link but to the app's own model pages
        rendered = _render(value)
        assert "<img" not in rendered, value
        links = re.findall(r"<a [^>]*>", rendered)
        assert all(re.fullmatch(r'<a href="\./model\?model=[A-Za-z0-9%/_.~-]*">', link) for link in links), value
