"""Write the tutorial notebooks from their sources: ``python notebooks/_build.py [NAME ...]``.

Each notebook's source is a Python file in the percent format that jupytext reads
(``notebooks/src/NAME.py``): a line ``# %%`` starts a code cell, ``# %% [markdown]`` a markdown
cell whose lines are commented with ``# ``, and ``tags=[...]`` after the marker tags the cell.
The sources are what you edit, lint and diff; this script writes ``notebooks/NAME.ipynb``
without outputs and with stable cell ids (a rebuild of an unchanged source changes nothing).
The test suite checks that the committed notebooks are what this script writes, and runs them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
NOTEBOOKS = {path.stem: path for path in sorted(SOURCES.glob("[0-9][0-9]_*.py"))}
MARKER = re.compile(r"^# %%(?P<markdown> \[markdown\])?(?: tags=(?P<tags>\[.*\]))?\s*$")


def cells(text: str) -> list[nbformat.NotebookNode]:
    """The cells of a percent-format source, in order."""
    found: list[tuple[re.Match, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = MARKER.match(line)
        if match:
            found.append((match, []))
        elif line.startswith("# %%"):
            raise ValueError(f"line {number}: a cell marker must read '# %%', '# %% [markdown]' or '# %% tags=[...]'")
        elif found:
            found[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"line {number}: text before the first '# %%' cell marker")
    result = []
    for match, lines in found:
        body = "\n".join(lines).strip("\n")
        if match["markdown"]:
            if any(line and not (line == "#" or line.startswith("# ")) for line in body.splitlines()):
                raise ValueError(f"markdown cell {len(result)}: every line must start with '# ' (or be '#')")
            cell = new_markdown_cell("\n".join(line[2:] for line in body.splitlines()))
        else:
            cell = new_code_cell(body)
        if match["tags"]:
            cell.metadata["tags"] = json.loads(match["tags"])
        cell.id = f"cell-{len(result):02d}"
        result.append(cell)
    return result


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of NOTEBOOKS), without outputs."""
    notebook = new_notebook(
        cells=cells(NOTEBOOKS[name].read_text(encoding="utf-8")),
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                  "language_info": {"name": "python"}})
    nbformat.validate(notebook)
    return notebook


def write(name: str) -> Path:
    """Write ``notebooks/NAME.ipynb`` from its source; returns its path."""
    path = HERE / f"{name}.ipynb"
    nbformat.write(build(name), path)
    return path


def main(names: list[str]) -> None:
    unknown = sorted(set(names) - set(NOTEBOOKS))
    if unknown:
        sys.exit(f"no source for {', '.join(unknown)} in {SOURCES}; sources: {', '.join(NOTEBOOKS)}")
    for name in names or NOTEBOOKS:
        print(write(name))


if __name__ == "__main__":
    main(sys.argv[1:])
