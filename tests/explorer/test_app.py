"""The explorer's pages, driven by streamlit's AppTest: every page renders, search finds, bad uploads are refused."""

from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from probex.zoo import ModelZoo

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
PAGES = ["views/home.py", "views/trees.py", "views/experts.py", "views/atlas.py", "views/search.py",
         "views/inspect.py"]


def app_on(population: Path | None = None, **query) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=180)
    if population is not None:
        app.session_state["population_path"] = str(population)
    app.query_params.update(query)
    return app.run()


def open_page(population: Path, page: str) -> AppTest:
    app = app_on(population)
    return app.switch_page(page).run()


def held_out_concept(population: Path) -> str:
    """The held-out concept with the most models in the population's test_holdout split."""
    zoo = ModelZoo.open(population).select(tree="mini-sd", split="test_holdout")
    return Counter(record.labels[0] for record in zoo.records).most_common(1)[0][0]


def test_the_app_opens_on_the_demo_jungle_home_page():
    app = app_on()
    assert not app.exception
    assert app.title[0].value == "ProbeX Explorer"
    assert app.metric[0].value == "2,800"  # every model of the shipped jungle
    assert any("Device" in caption.value for caption in app.sidebar.caption)


def test_probex_threads_is_honoured_and_a_bad_value_is_a_warning(monkeypatch):
    # torch's thread setting belongs to the thread that sets it: the script's, which the sidebar reports
    monkeypatch.setenv("PROBEX_THREADS", "1")
    app = app_on()
    assert not app.exception
    assert any("1 torch thread " in caption.value for caption in app.sidebar.caption)
    monkeypatch.setenv("PROBEX_THREADS", "two")
    app = app_on()
    assert not app.exception
    assert any("PROBEX_THREADS" in warning.value for warning in app.warning)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_an_exception(mini_jungle, page):
    app = open_page(mini_jungle, page)
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    assert app.title


def test_the_trees_page_finds_the_four_trees_and_routes_the_other_models_right(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["trees found"] == "4"
    accuracy = next(value for label, value in metrics.items() if label.startswith("routing accuracy"))
    routed = float(accuracy.rstrip("%")) / 100
    held = next(frame.value for frame in app.dataframe if frame.value.index.name == "true tree")
    constant = held.sum(axis=1).max() / held.to_numpy().sum()  # every other model sent to the largest tree
    assert routed >= 0.95 and routed > constant + 0.2  # a few dozen models per tree calibrate the radii (1 stray seen)


def test_the_trees_page_sends_most_other_models_of_each_true_tree_to_the_tree_named_after_it(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    table = next(frame.value for frame in app.dataframe if frame.value.index.name == "true tree")
    assert set(table.index) == {"cnn-attributes", "cnn-supervised", "mixer-supervised", "mini-sd"}
    for truth, row in table.iterrows():
        assert row.idxmax().endswith(f"({truth})")


def test_the_trees_page_routes_an_uploaded_model_to_its_tree(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    model = ModelZoo.open(mini_jungle).select(tree="cnn-attributes", split="test").records[0]
    app.file_uploader(key="trees_upload").upload("model.safetensors", model.path.read_bytes()).run()
    assert not app.exception
    assert "cnn-attributes" in app.success[0].value


def test_a_held_out_prompt_finds_that_concepts_models_first(mini_jungle):
    concept = held_out_concept(mini_jungle)
    app = open_page(mini_jungle, "views/search.py")
    app.text_input(key="prompt").input(f"a {concept}").run()
    assert not app.exception
    hits = app.dataframe[0].value
    assert list(hits["concept"][:3]) == [concept] * 3
    assert app.query_params["prompt"] == [f"a {concept}"] or app.query_params["prompt"] == f"a {concept}"


def test_the_page_and_prompt_in_the_address_open_the_search_results(mini_jungle):
    concept = held_out_concept(mini_jungle)
    app = app_on(mini_jungle, page="search", prompt=concept)
    assert not app.exception
    assert app.title[0].value == "Search models with words"
    assert app.dataframe[0].value["concept"][0] == concept


def test_what_is_this_model_names_a_held_out_models_concept_first(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="mini-sd", split="test_holdout").records[0]
    app = open_page(mini_jungle, "views/search.py")
    app.radio(key="search_mode").set_value("What is this model?").run()
    app.selectbox(key="what_model").set_value(model.id).run()
    assert not app.exception
    assert app.dataframe[0].value["label"][0] == model.labels[0]


@pytest.mark.parametrize("name, content, expected", [
    ("weights.bin", b"\x80\x04pickle", "not a .safetensors file"),
    ("weights.safetensors", b"\xff" * 64, "corrupt"),
    ("weights.safetensors", save({"w": torch.zeros(5, 7)}), "wrong architecture"),
], ids=["pickle", "corrupt", "wrong-architecture"])
def test_a_bad_upload_shows_an_error_not_a_traceback(mini_jungle, name, content, expected):
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload(name, content).run()
    assert not app.exception
    assert expected in app.error[0].value


def test_a_too_large_upload_is_refused_before_it_is_read(mini_jungle, monkeypatch):
    from explorer import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload("big.safetensors", b"\0" * 2000).run()
    assert not app.exception
    assert "larger than" in app.error[0].value


def test_inspect_predicts_an_uploaded_lora_models_concept(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="mini-sd", split="test").records[0]
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload("lora.safetensors", model.path.read_bytes()).run()
    assert not app.exception
    assert "mini-sd" in app.success[0].value
    assert any(f"**{model.labels[0]}**" in markdown.value for markdown in app.markdown)


def test_a_missing_population_folder_is_an_error_in_the_page(tmp_path):
    app = app_on(tmp_path / "nowhere")
    assert not app.exception
    assert "no such folder" in app.error[0].value


def test_an_expert_trained_on_the_experts_page_is_used_by_search(mini_jungle):
    app = open_page(mini_jungle, "views/experts.py")
    app.selectbox(key="experts_tree").set_value("mini-sd").run()
    app.number_input[0].set_value(3)
    app.button[0].click().run()
    assert not app.exception
    assert "now the mini-sd expert" in app.success[0].value
    metrics = list(app.dataframe[-1].value["metric"])
    assert metrics[0] == "zero-shot validation top-1 (val_holdout)"
    assert any(metric.startswith("in-distribution") for metric in metrics)
    assert any(metric.startswith("zero-shot top-1 over") for metric in metrics)
    app.run()  # any later run of the page shows the trained expert as the one in use, with its figures
    assert any("(trained in this session)" in markdown.value for markdown in app.markdown)
    assert any("metric" in frame.value.columns for frame in app.dataframe)
    app.switch_page("views/search.py").run()
    assert not app.exception
    assert any("trained in this session" in caption.value for caption in app.caption)


def plain_zoo(folder: Path) -> Path:
    """A user's zoo that says nothing about trees or labels: two groups of 12 models of one architecture."""
    from probex.zoo import ModelRecord
    from probex.zoo.manifest import save_model_file, write_manifest

    generator = torch.Generator().manual_seed(0)
    records = []
    for number in range(24):
        base = 5.0 if number < 12 else -5.0
        tensors = {"fc.weight": base + 0.1 * torch.randn(6, 8, generator=generator), "fc.bias": torch.zeros(6)}
        path = save_model_file(folder / f"m{number:02d}.safetensors", tensors, id=f"m{number:02d}")
        records.append(ModelRecord(id=f"m{number:02d}", path=path))
    write_manifest(folder, records, name="plain")
    return folder


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_zoo_without_trees_labels_or_experts(tmp_path, page):
    app = open_page(plain_zoo(tmp_path), page)
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
