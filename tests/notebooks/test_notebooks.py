"""The tutorials in notebooks/ run top to bottom on the shipped demo jungle, offline.

Each notebook is executed with nbclient in a python3 kernel (cwd notebooks/, HF_HUB_OFFLINE=1).
Notebook 02 prints its measured figures as ``NAME = value`` lines, which are checked here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="executing the notebooks needs nbformat (requirements-test.txt)")
nbclient = pytest.importorskip("nbclient", reason="executing the notebooks needs nbclient (requirements-test.txt)")
pytest.importorskip("ipykernel", reason="executing the notebooks needs ipykernel (requirements-test.txt)")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT_S = 300
FIGURE_LINE = re.compile(r"^([A-Z][A-Z0-9_]+) = (-?[0-9.]+)$", re.MULTILINE)


@pytest.fixture(scope="session")
def kernel_name() -> str:
    """The python3 kernel, installed for this interpreter when the environment has none."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        from ipykernel.kernelspec import install

        install(user=True)
    return "python3"


def execute(path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch):
    """The notebook at ``path`` after running every cell (nbclient raises on the first error)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return notebook


def printed(notebook) -> str:
    """Everything the notebook's cells printed to stdout."""
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.output_type == "stream" and output.name == "stdout")


def figures(notebook) -> dict[str, float]:
    """The ``NAME = value`` lines the notebook printed."""
    return {name: float(value) for name, value in FIGURE_LINE.findall(printed(notebook))}


def test_every_notebook_is_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        stale = [i for i, cell in enumerate(notebook.cells)
                 if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
        assert not stale, f"{path.name}: cells {stale} carry outputs; rebuild with python notebooks/_build.py"


def test_quickstart_runs_and_routes_the_unseen_model(kernel_name, monkeypatch):
    notebook = execute(NOTEBOOKS / "01_quickstart.ipynb", kernel_name, monkeypatch)
    text = printed(notebook)
    assert "4 trees found (4 true trees)" in text
    assert re.search(r"routed to tree_\d+, the cluster whose models come from cnn-attributes", text)
