"""The tutorials in notebooks/ run top to bottom on the shipped demo jungle, offline; 02 and 03 also on a user's zoo.

Each notebook is executed with nbclient in a python3 kernel (cwd notebooks/, HF_HUB_OFFLINE=1,
one torch thread). After its last cell, the test evaluates the figures the notebook's story
rests on in the same kernel (:func:`execute`'s ``measure``: names -> Python expressions over the
notebook's variables) and checks the story holds against its baselines, e.g. notebook 02's
intra- vs inter-tree gap against chance. Notebook 04 also runs its online path, against a fake
Hub on loopback (tests/zoo/fake_hub.py) serving a small Model-J SD_200 in the real layout.
"""

from __future__ import annotations

import importlib.util
import io
import re
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path

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
CHANCE = 0.5  # mean binary accuracy of a random guess (training-class prediction)
#: Demo-jungle tree names that no notebook cell may use to find a tree (roles say which tree is which).
JUNGLE_TREE_NAMES = ("forest-", "mini-sd")
STRING_TOKENS = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}  # f-string parts (Python 3.12+)


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


def execute(path: Path, kernel_name: str, monkeypatch: pytest.MonkeyPatch, measure: dict[str, str] | None = None,
            zoo: Path | None = None, env: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, dict]:
    """Run every cell of the notebook at ``path``, then evaluate ``measure`` (name -> expression) in its kernel.

    ``zoo`` is passed as ``PROBEX_NOTEBOOK_ZOO`` (the notebooks that take a zoo read it). Returns
    the executed notebook (without the measuring cell) and the measured values; nbclient raises
    CellExecutionError on the first failing cell. ``env``: variables for the kernel on top of the
    offline defaults (an online run sets HF_HUB_OFFLINE=0).
    """
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    # one torch thread per kernel: on a CI machine whose cores are shared, two threads spinning
    # against other processes made notebook 02 take 320 s instead of 19 s
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if zoo is None:
        monkeypatch.delenv("PROBEX_NOTEBOOK_ZOO", raising=False)
    else:
        monkeypatch.setenv("PROBEX_NOTEBOOK_ZOO", str(zoo))
    notebook = nbformat.read(path, as_version=4)
    cells = len(notebook.cells)
    if measure:
        entries = ", ".join(f"{name!r}: {expression}" for name, expression in measure.items())
        notebook.cells.append(nbformat.v4.new_code_cell(
            "import json as _json\nfrom IPython.display import display as _display\n"
            f"_display({{'application/json': _json.loads(_json.dumps({{{entries}}}, default=float))}}, raw=True)"))
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    measured = {}
    if measure:
        (output,) = [output for output in notebook.cells[-1].outputs if output.output_type == "display_data"]
        measured = dict(output.data["application/json"])
        del notebook.cells[cells:]
    return notebook, measured


def printed(notebook) -> str:
    """Everything the notebook's cells printed to stdout."""
    return "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                   for output in cell.get("outputs", []) if output.output_type == "stream" and output.name == "stdout")


def plotly_figures(notebook) -> int:
    """How many plotly figures the notebook displayed."""
    return sum("application/vnd.plotly.v1+json" in output.get("data", {}) for cell in notebook.cells
               if cell.cell_type == "code" for output in cell.get("outputs", []))


# -- what each notebook's story rests on: what to measure after its last cell, and the check ----

QUICKSTART = {"trees_found": "router.n_trees_", "true_trees": "len(trees)", "routing_accuracy": "routing_accuracy",
              "routed_from": "router.tree_truth_[routed_tree]", "tree": "tree",
              "trained_now": "expert.score(test)", "shipped": "shipped.score(test)"}


def check_quickstart(notebook, measured) -> None:
    assert measured["trees_found"] == measured["true_trees"] == 5, measured
    assert measured["routing_accuracy"] == 1.0, measured
    assert measured["routed_from"] == measured["tree"] == "cnn-attributes", measured
    assert measured["trained_now"] > CHANCE + 0.2, measured
    assert measured["shipped"] > CHANCE + 0.3, measured


WHY_TREES = {"trees": "trees", "forest": "forest", "intra": "intra",
             "positive_transfer": "{tree: growth[tree].iloc[-1] - growth[tree].iloc[0] for tree in trees}",
             "negative_transfer_mean_drop": "drops.mean()",
             "per_tree": "comparison.iloc[-1]['one expert per tree']",
             "shared": "comparison.iloc[-1]['one shared expert']",
             "mixture_of_experts": "moe_rows['overall']['score']",
             "table1": "{name: (row['views'], row['best ProbeX - Dense'], row['fewer parameters']) for name, row in table1.items()}"}


def check_why_model_trees(notebook, measured) -> None:
    # the intra- vs inter-tree gap: a probe reads classes within a tree, not across random inits
    assert measured["forest"] is not None, "the demo jungle has a forest"
    assert measured["intra"] > CHANCE + 0.3, measured
    assert measured["intra"] > measured["forest"] + 0.2, measured
    assert measured["forest"] < CHANCE + 0.15, measured
    # positive transfer within a tree, negative transfer when other populations are mixed in
    assert all(gain > 0.05 for gain in measured["positive_transfer"].values()), measured
    assert measured["negative_transfer_mean_drop"] > 0.0, measured
    assert measured["per_tree"] >= measured["shared"], measured
    assert measured["mixture_of_experts"] > CHANCE + 0.3, measured
    # Table 1 as check.json recorded it, every classifier tree, and the parameter lesson on one of them
    assert len(measured["table1"]) == 4, measured
    assert any(margin >= 0.02 and fewer >= 10 for _, margin, fewer in measured["table1"].values()), measured


LANGUAGE = {"tree": "tree", "held_out": "len(held_out)", "chance": "chance", "source": "source",
            "shipped": "results[f'{source} (' + ' + '.join(shipped.layers_) + ')']",
            "zero_shot_relu": "results[f'{layer}, activation=relu']['zero_shot']",
            "zero_shot_none": "results[f'{layer}, activation=none']['zero_shot']",
            "whole_zoo": "{'concept': concept, 'weak': whole.weak, 'dog_weak': dog.weak, "
                         "'trees': sorted({hit.tree for hit in whole.hits}), "
                         "'classifier_hits': [concept in hit.labels for hit in whole.hits if hit.method == 'classifier']}"}


def check_weights_meet_language(notebook, measured) -> None:
    zero_shot_chance = measured["chance"]["zero_shot"]
    assert zero_shot_chance == pytest.approx(1 / 16), measured  # 16 held-out concepts
    assert measured["source"] == "shipped", measured
    assert measured["shipped"]["zero_shot"] > zero_shot_chance + 0.5, measured
    assert measured["shipped"]["in_distribution"] > measured["chance"]["in_distribution"] + 0.5, measured
    assert measured["zero_shot_relu"] > zero_shot_chance + 0.2, measured
    assert measured["zero_shot_relu"] > measured["zero_shot_none"] + 0.1, measured  # the ReLU ablation
    # the whole zoo answers: the aligned tree and every classifier tree, the classifier hits trained on the concept
    whole = measured["whole_zoo"]
    assert not whole["weak"] and whole["dog_weak"], measured
    assert len(whole["trees"]) >= 2 and whole["classifier_hits"] and all(whole["classifier_hits"]), measured


def check_model_j_on_the_hub(notebook, measured) -> None:
    text = printed(notebook)
    # offline (HF_HUB_OFFLINE=1) the notebook says so plainly and goes on with the demo jungle
    assert "The Hugging Face Hub cannot be reached from here, so the steps below run on the demo jungle instead." in text
    assert re.search(r"best layer by validation: \S+ \(val [0-9.]+", text)
    assert re.search(r"router: 5 trees found; accuracy on 1120 unseen models: 1\.000", text)


def check_bring_your_own_zoo(notebook, measured) -> None:
    text = printed(notebook)
    assert re.search(r": 156 weight files", text)
    assert "trees in the folder: 1" in text
    assert "The Hub is not reachable from here, so this step is skipped:" in text


INSIDE = {"checks": "checks", "accuracy": "accuracy", "majority": "majority", "relu_departure": "relu_departure",
          "shapes": "{'U': list(U.shape), 'V': list(V.shape), 'M': list(M.shape), 'T': list(T.shape)}",
          "layer": "[d_W, d_H, d_Y]", "view_checks": "view_checks", "multiview": "multiview_scores",
          "own_heads": "{name: row['test mean binary accuracy'] for name, row in own_heads.items()}"}


def check_inside_probex(notebook, measured) -> None:
    d_W, d_H, d_Y = measured["layer"]
    assert measured["shapes"] == {"U": [d_H, 16], "V": [d_W, 8], "M": [16, 8, 32], "T": [32, d_Y]}, measured
    # every pair of computations the propositions call equal agrees to float32 precision ...
    assert len(measured["checks"]) == 6 and all(value < 1e-4 for value in measured["checks"].values()), measured
    # ... while the ReLU network is measurably not linear, and the hand-built ProbeX learns
    assert measured["relu_departure"] > 0.1, measured
    assert measured["accuracy"] > max(CHANCE, measured["majority"]) + 0.2, measured
    # multi-view probes: each view is its formula, and a multi-view ProbeX learns the layer too
    assert len(measured["view_checks"]) == 4 and all(value < 1e-4 for value in measured["view_checks"].values()), measured
    assert measured["multiview"]["all"] > max(CHANCE, measured["majority"]) + 0.2, measured
    # on the tree whose models start their own random heads, only the view its role names reads the classes
    own = measured["own_heads"]
    assert own["xtxu (the tree's views)"] > max(own["Dense"], own["ProbeX (xu)"], own["xxtu"], CHANCE) + 0.03, measured


CHECKS: dict[str, tuple[dict[str, str], Callable]] = {
    "01_quickstart": (QUICKSTART, check_quickstart),
    "02_why_model_trees": (WHY_TREES, check_why_model_trees),
    "03_weights_meet_language": (LANGUAGE, check_weights_meet_language),
    "04_model_j_on_the_hub": ({}, check_model_j_on_the_hub),
    "05_bring_your_own_zoo": ({}, check_bring_your_own_zoo),
    "06_inside_probex": (INSIDE, check_inside_probex),
}


@pytest.mark.parametrize("name", sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")))
def test_notebook_runs_top_to_bottom_and_shows_what_it_says(name, kernel_name, monkeypatch):
    measure, check = CHECKS[name]
    notebook, measured = execute(NOTEBOOKS / f"{name}.ipynb", kernel_name, monkeypatch, measure)
    assert plotly_figures(notebook) >= 1, f"{name}: no plotly figure displayed"
    check(notebook, measured)


# -- the same notebooks on a user's zoo: trees found by their roles, not the jungle's names -------

@pytest.fixture(scope="module")
def renamed_zoo(small_jungle, tmp_path_factory):
    """Two classifier trees and the aligned tree of the small jungle, renamed and saved as a user's zoo with no
    roles declared, no recommended layers and no shipped experts (and no forest: none can be inferred)."""
    from tests.user_zoo import copy_as_user_zoo

    return copy_as_user_zoo(small_jungle, tmp_path_factory.mktemp("notebook-user-zoo"),
                            {"cnn-supervised": "alpha", "cnn-attributes": "gamma", "mini-sd": "beta"})


def test_why_model_trees_runs_on_a_user_zoo_without_a_forest(renamed_zoo, kernel_name, monkeypatch):
    notebook, measured = execute(NOTEBOOKS / "02_why_model_trees.ipynb", kernel_name, monkeypatch,
                                 {"trees": "trees", "forest": "forest", "pairs": "pairs", "intra": "intra",
                                  "sizes": "sizes"}, zoo=renamed_zoo)
    assert measured["trees"] == ["alpha", "gamma"] and measured["forest"] is None, measured
    assert [pair for pair in measured["pairs"] if "forest" in pair] == [], measured
    assert measured["sizes"] == [10, 14], measured  # the small jungle's trees have 14 training models
    assert "This zoo has no forest (trees with the forest role): the parts that compare against it are skipped." \
        in printed(notebook)
    assert plotly_figures(notebook) >= 3
    assert measured["intra"] > CHANCE + 0.1, measured


def test_weights_meet_language_runs_on_a_user_zoo_that_ships_nothing(renamed_zoo, kernel_name, monkeypatch):
    notebook, measured = execute(NOTEBOOKS / "03_weights_meet_language.ipynb", kernel_name, monkeypatch,
                                 LANGUAGE, zoo=renamed_zoo)
    text = printed(notebook)
    assert measured["tree"] == "beta" and measured["source"] == "trained now", measured
    assert "This zoo recommends no layer for 'beta': a short sweep" in text
    assert "This zoo ships no expert for 'beta': one is trained now" in text
    assert plotly_figures(notebook) >= 3
    assert measured["zero_shot_relu"] > measured["chance"]["zero_shot"] + 0.2, measured


# -- the notebooks as files -------------------------------------------------------------------

def test_every_notebook_has_its_checks():
    assert sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


def test_every_notebook_is_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        stale = [i for i, cell in enumerate(notebook.cells)
                 if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))]
        assert not stale, f"{path.name}: cells {stale} carry outputs; rebuild with python notebooks/_build.py"


def _generator():
    spec = importlib.util.spec_from_file_location("notebooks_build", NOTEBOOKS / "_build.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    return build


def test_every_notebook_is_what_its_generator_writes():
    build = _generator()
    assert sorted(build.NOTEBOOKS) == sorted(path.stem for path in NOTEBOOKS.glob("*.ipynb"))
    for name in build.NOTEBOOKS:
        assert (NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8") == nbformat.writes(build.build(name)) + "\n", (
            f"{name}.ipynb differs from notebooks/src/{name}.py; run python notebooks/_build.py")


def test_the_generator_reads_the_percent_format():
    build = _generator()
    cells = build.cells('# %% [markdown]\n# # Title\n#\n# text\n\n# %% tags=["parameters"]\nZOO = None\n\n'
                        '# %%\nprint(ZOO)\n')
    assert [(cell.cell_type, cell.source) for cell in cells] == [
        ("markdown", "# Title\n\ntext"), ("code", "ZOO = None"), ("code", "print(ZOO)")]
    assert cells[1].metadata["tags"] == ["parameters"] and [cell.id for cell in cells] == ["cell-00", "cell-01", "cell-02"]
    with pytest.raises(ValueError, match="must start with '# '"):
        build.cells("# %% [markdown]\nnot a comment\n")
    with pytest.raises(ValueError, match="before the first"):
        build.cells("import os\n# %%\n")


def test_no_notebook_cell_finds_a_tree_by_a_jungle_name():
    """Code cells find trees by role; the jungle's tree names may appear in comments and markdown only."""
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for number, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type != "code":
                continue
            strings = [token.string for token in tokenize.generate_tokens(io.StringIO(cell.source).readline)
                       if token.type in STRING_TOKENS]
            named = [string for string in strings if any(name in string for name in JUNGLE_TREE_NAMES)]
            assert not named, f"{path.name}, cell {number}: finds a tree by name ({named}); use zoo.trees_with_role(...)"


def test_measuring_reads_values_from_the_kernel(kernel_name, monkeypatch, tmp_path):
    path = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import numpy as np\nx = np.float32(0.25)")]),
                   path)
    notebook, measured = execute(path, kernel_name, monkeypatch, {"x": "x", "twice": "[x, 2 * x]", "name": "'a'"})
    assert measured == {"x": 0.25, "twice": [0.25, 0.5], "name": "a"}
    assert len(notebook.cells) == 1


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
        notebook, _ = execute(NOTEBOOKS / "04_model_j_on_the_hub.ipynb", kernel_name, monkeypatch,
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
