"""The tutorials in notebooks/ run top to bottom on the shipped demo jungle, offline.

Each notebook is executed with nbclient in a python3 kernel (cwd notebooks/, HF_HUB_OFFLINE=1,
one torch thread). Notebook 04 also runs its online path, against a fake Hub on loopback
(tests/zoo/fake_hub.py) serving a small Model-J SD_200 in the real layout.
The notebooks print the figures their stories rest on as ``NAME = value`` lines; the tests
read them back and check the story holds (e.g. notebook 02's intra- vs inter-tree gap).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from safetensors.torch import save

sys.path.insert(0, str(Path(__file__).parents[1] / "zoo"))  # the fake Hub lives beside the zoo tests

from fake_hub import SD_LAYER_46, FakeHub, loopback_factory  # noqa: E402
from modelj_architectures import sd_unet_lora_tensors  # noqa: E402

nbformat = pytest.importorskip("nbformat", reason="executing the notebooks needs nbformat (requirements-test.txt)")
nbclient = pytest.importorskip("nbclient", reason="executing the notebooks needs nbclient (requirements-test.txt)")
pytest.importorskip("ipykernel", reason="executing the notebooks needs ipykernel (requirements-test.txt)")

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT_S = 300
FIGURE_LINE = re.compile(r"^([A-Z][A-Z0-9_]+) = (-?[0-9.]+)\b", re.MULTILINE)


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


def execute(path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str] | None = None):
    """The notebook at ``path`` after running every cell (nbclient raises CellExecutionError on the first error).

    ``env``: variables for the kernel on top of the offline defaults (an online run sets HF_HUB_OFFLINE=0).
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    # one torch thread per kernel: on a CI machine whose cores are shared, two threads spinning
    # against other processes made notebook 02 take 320 s instead of 19 s
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
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


def plotly_figures(notebook) -> int:
    """How many plotly figures the notebook displayed."""
    return sum("application/vnd.plotly.v1+json" in output.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for output in cell.get("outputs", []))


# -- what each notebook's story rests on -------------------------------------------------------

def check_quickstart(notebook) -> None:
    text = printed(notebook)
    assert "4 trees found (4 true trees)" in text
    assert re.search(r"routed to tree_\d+, the cluster whose models come from cnn-attributes", text)


def check_why_model_trees(notebook) -> None:
    measured = figures(notebook)
    # the intra- vs inter-tree gap: a probe reads classes within a tree, not across random inits
    assert measured["INTRA_TREE_ACCURACY"] > measured["FOREST_ACCURACY"] + 0.2, measured
    assert measured["FOREST_ACCURACY"] < 0.65, measured
    assert measured["INTRA_INTER_GAP"] == pytest.approx(measured["INTRA_TREE_ACCURACY"] - measured["FOREST_ACCURACY"], abs=2e-3)
    # positive transfer within a tree, negative transfer when other populations are mixed in
    assert measured["POSITIVE_TRANSFER_CNN_SUPERVISED"] > 0.05, measured
    assert measured["POSITIVE_TRANSFER_CNN_ATTRIBUTES"] > 0.05, measured
    assert measured["NEGATIVE_TRANSFER_MEAN_DROP"] > 0.0, measured
    assert measured["PER_TREE_ACCURACY"] >= measured["SHARED_ACCURACY"], measured


def check_weights_meet_language(notebook) -> None:
    measured = figures(notebook)
    assert measured["ZERO_SHOT_RELU"] > 1 / 16 + 0.2, measured  # 16 held-out concepts
    assert measured["ZERO_SHOT_RELU"] > measured["ZERO_SHOT_NONE"] + 0.1, measured  # the ReLU ablation


def check_model_j_on_the_hub(notebook) -> None:
    text = printed(notebook)
    # offline (HF_HUB_OFFLINE=1) the notebook says so plainly and goes on with the demo jungle
    assert "The Hugging Face Hub cannot be reached from here, so the steps below run on the demo jungle instead." in text
    assert re.search(r"best layer by validation: \S+ \(val [0-9.]+", text)
    assert re.search(r"router: 4 trees found; accuracy on 1030 unseen models: 1\.000", text)


def check_bring_your_own_zoo(notebook) -> None:
    text = printed(notebook)
    assert re.search(r": 156 weight files", text)
    assert "trees in the folder: 1" in text
    assert "The Hub is not reachable from here, so this step is skipped:" in text


CHECKS: dict[str, Callable] = {
    "01_quickstart": check_quickstart,
    "02_why_model_trees": check_why_model_trees,
    "03_weights_meet_language": check_weights_meet_language,
    "04_model_j_on_the_hub": check_model_j_on_the_hub,
    "05_bring_your_own_zoo": check_bring_your_own_zoo,
}


@pytest.mark.parametrize("name", sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_top_to_bottom_and_shows_what_it_says(name, kernel_name, monkeypatch):
    notebook = execute(NOTEBOOKS / f"{name}.ipynb", kernel_name, monkeypatch)
    assert plotly_figures(notebook) >= 1, f"{name}: no plotly figure displayed"
    CHECKS.get(name, lambda notebook: None)(notebook)


def test_every_notebook_has_its_checks():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


def test_every_notebook_is_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        stale = [i for i, cell in enumerate(notebook.cells)
                 if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
        assert not stale, f"{path.name}: cells {stale} carry outputs; rebuild with python notebooks/_build.py"


def test_every_notebook_is_what_its_generator_writes():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert sorted(build.NOTEBOOKS) == sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
    for name in build.NOTEBOOKS:
        committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert [cell.source for cell in committed.cells] == [cell.source for cell in build.build(name).cells], (
            f"{name}.ipynb differs from notebooks/_build.py; run python notebooks/_build.py")


# -- notebook 04 online, against a fake Hub ------------------------------------------------------

SEEN_CLASSES = ["1", "9", "130", "207", "281", "340", "404", "963"]  # ImageNet indices: goldfish, ostrich, ...
HELD_OUT_CLASSES = ["22", "417"]


def add_small_sd_200(hub: FakeHub) -> int:
    """ProbeX/Model-J__SD_200 with all five splits: 3/1/1 models per seen class, 2 + 2 per held-out class."""
    files, index = {}, 0
    layout = [("train", SEEN_CLASSES, 3), ("val", SEEN_CLASSES, 1), ("test", SEEN_CLASSES, 1),
              ("val_holdout", HELD_OUT_CLASSES, 2), ("test_holdout", HELD_OUT_CLASSES, 2)]
    for split, classes, per_class in layout:
        for class_id in classes:
            for _ in range(per_class):
                tensors = sd_unet_lora_tensors(torch.Generator().manual_seed(index), rank=4)
                metadata = {"imagenet_class_id": class_id, "rank": "4", "seed": str(index)}
                files[f"{split}/model_idx_{index:04d}/pytorch_lora_weights.safetensors"] = save(tensors, metadata=metadata)
                index += 1
    hub.add("ProbeX/Model-J__SD_200", files)
    return index


def test_notebook_04_runs_its_online_path_against_a_fake_hub(kernel_name, monkeypatch, tmp_path):
    servers = loopback_factory()
    try:
        hub = FakeHub(servers)
        models = add_small_sd_200(hub)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        notebook = execute(NOTEBOOKS / "04_model_j_on_the_hub.ipynb", kernel_name, monkeypatch,
                           env={"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home")})
    finally:
        servers.stop_all()
    text = printed(notebook)
    assert "cannot be reached" not in text
    assert re.search(rf"Model-J SD_200 in \S+: {models} models\n  downloaded: {models} ", text), text[:2000]
    assert "failed: 0" in text
    best = re.search(r"best layer by validation: (\S+) \(val [0-9.]+, zero-shot test ([0-9.]+)\)", text)
    assert best and best.group(1) == SD_LAYER_46, text[-3000:]
    weight_reads = [path for method, path, _ in hub.answered if method == "GET" and path.endswith(".safetensors")]
    assert len(weight_reads) <= 2 * models  # one layer per model by range requests, never the whole files
