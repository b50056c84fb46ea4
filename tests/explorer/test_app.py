"""The explorer's pages, driven by streamlit's AppTest: every page renders, views open from the address,
search finds and calibrates, uploads are refused in plain words, training runs in the background."""

import base64
import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from probex.storage import safe_name
from tests.app_charts import figure_specs
from probex import jungle
from probex.zoo import ModelZoo

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
PAGES = ["views/home.py", "views/trees.py", "views/experts.py", "views/atlas.py", "views/search.py",
         "views/inspect.py", "views/model.py"]


def app_on(population: Path | None = None, **query) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=240)
    if population is not None:
        app.session_state["population_path"] = str(population)
    app.query_params.update(query)
    return app.run()


def open_page(population: Path, page: str) -> AppTest:
    app = app_on(population)
    return app.switch_page(page).run()


def open_search(population: Path, tree: str = "mini-sd") -> AppTest:
    """The Search page narrowed to one aligned tree (its default is every tree of the zoo)."""
    app = open_page(population, "views/search.py")
    return app.selectbox(key="search_tree").set_value(tree).run()


def held_out_concept(population: Path) -> str:
    """The held-out concept with the most models in the population's test_holdout split."""
    zoo = ModelZoo.open(population).select(tree="mini-sd", split="test_holdout")
    return Counter(record.labels[0] for record in zoo.records).most_common(1)[0][0]


def chart_specs(app: AppTest) -> list[dict]:
    """The plotly figures of the page, as the browser receives them (typed arrays decoded to lists): the
    ``st.plotly_chart`` ones, then the maps drawn in place (explorer/map_frame.py)."""
    return [decoded(spec) for spec in figure_specs(app)]


def decoded(value):
    """plotly's JSON with its typed arrays ({"bdata": base64, "dtype": ...}) turned back into lists."""
    if isinstance(value, dict) and set(value) >= {"bdata", "dtype"}:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return array.reshape(value["shape"]).tolist() if "shape" in value else array.tolist()
    if isinstance(value, dict):
        return {key: decoded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decoded(item) for item in value]
    return value


def shown(text: str) -> str:
    """Markdown source as it reads on the page (the app escapes text from data with backslashes)."""
    return re.sub(r"\\(.)", r"\1", text)


def texts(elements) -> str:
    return "\n".join(shown(element.value) for element in elements)


def test_the_app_opens_on_the_demo_jungle_home_page_with_compute_controls():
    app = app_on()
    assert not app.exception
    assert app.title[0].value == "ProbeX Explorer"
    assert app.metric[0].value == "3,100"  # every model of the shipped jungle
    assert app.sidebar.selectbox(key="device").value == "cpu" or app.sidebar.selectbox(key="device").value.startswith("cuda")
    assert app.sidebar.number_input(key="torch_threads").value >= 1


def test_probex_threads_is_the_first_thread_count_and_a_bad_value_is_a_warning(monkeypatch):
    monkeypatch.setenv("PROBEX_THREADS", "1")
    app = app_on()
    assert not app.exception
    assert app.sidebar.number_input(key="torch_threads").value == 1
    assert any("1 CPU thread." in caption.value for caption in app.sidebar.caption)
    monkeypatch.setenv("PROBEX_THREADS", "two")
    app = app_on()
    assert not app.exception
    assert "PROBEX_THREADS" in texts(app.warning)


def test_an_unknown_page_in_the_address_says_so():
    app = app_on(page="nonsense")
    assert not app.exception
    assert "no page “nonsense”" in app.warning[0].value and app.title[0].value == "ProbeX Explorer"


def test_the_sidebar_shows_the_cache_size_against_its_cap(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", "3")
    app = app_on()
    assert not app.exception
    assert any("of 3 GB" in caption.value and "PROBEX_CACHE_MAX_GB" in caption.value for caption in app.sidebar.caption)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_an_exception(mini_jungle, page):
    app = open_page(mini_jungle, page)
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    assert app.title


def test_the_trees_page_finds_the_five_trees_and_routes_the_other_models_right(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["trees found"] == "5"
    accuracy = next(value for label, value in metrics.items() if label.startswith("routing accuracy"))
    routed = float(accuracy.rstrip("%")) / 100
    held = next(frame.value for frame in app.dataframe if frame.value.index.name == "true tree")
    constant = held.sum(axis=1).max() / held.to_numpy().sum()  # every other model sent to the largest tree
    assert routed >= 0.95 and routed > constant + 0.2  # a few dozen models per tree calibrate the radii (1 stray seen)


def test_the_trees_are_named_by_their_true_tree_without_hashes_and_route_the_other_models_to_their_name(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    trees = next(frame.value for frame in app.dataframe if "architecture" in frame.value.columns)
    assert set(trees["tree"]) == {"cnn-attributes", "cnn-supervised", "mixer-supervised", "cnn-own-heads", "mini-sd"}
    assert not any("#" in name for name in trees["architecture"])
    assert all(name.split(",")[0].endswith("layers") for name in trees["architecture"])
    table = next(frame.value for frame in app.dataframe if frame.value.index.name == "true tree")
    for truth, row in table.iterrows():
        assert row.idxmax() == truth
    dendrogram = chart_specs(app)[0]
    legend = {trace["name"] for trace in dendrogram["data"] if trace.get("mode") == "lines"}
    assert {"cnn-attributes", "mini-sd"} <= legend and not any(name.startswith("tree_") for name in legend)


def test_one_tree_has_one_colour_in_both_panels_of_the_map(mini_jungle):
    app = open_page(mini_jungle, "views/trees.py")
    weight_map = chart_specs(app)[1]
    colours: dict[str, set] = {}
    for trace in weight_map["data"]:
        colours.setdefault(trace["name"], set()).add(trace["marker"]["color"])
    assert all(len(found) == 1 for found in colours.values()), colours


@pytest.mark.parametrize("tree", ["cnn-attributes", "mini-sd"])  # dense weights; LoRA factors (never merged whole)
def test_an_uploaded_model_joins_its_tree_and_is_drawn_on_the_dendrogram_and_the_map(mini_jungle, tree):
    app = open_page(mini_jungle, "views/trees.py")
    model = ModelZoo.open(mini_jungle).select(tree=tree, split="test").records[0]
    app.file_uploader(key="trees_upload").upload("model.safetensors", model.path.read_bytes()).run()
    assert not app.exception
    assert tree in app.success[0].value and "within" in app.success[0].value
    for spec in chart_specs(app)[:2]:  # the dendrogram, then the map (a star on each of its panels)
        stars = [trace for trace in spec["data"] if trace.get("name") == "your model"]
        assert stars and all("radius" in star["hovertext"][0] for star in stars)


def test_a_held_out_prompt_finds_that_concepts_models_first_with_calibrated_scores(mini_jungle):
    concept = held_out_concept(mini_jungle)
    app = open_search(mini_jungle)
    app.text_input(key="prompt").input(f"a {concept}").run()
    assert not app.exception
    hits = app.dataframe[0].value
    assert list(hits["concept"][:3]) == [concept] * 3
    assert hits["held out"][0] and 0.0 < hits["match"][0] <= 1.0
    assert hits["model"][0].startswith("./model?model=")
    assert app.query_params["prompt"] in ([f"a {concept}"], f"a {concept}")
    assert not app.warning  # a strong match: no "no strong match" note


def test_a_prompt_nothing_was_trained_on_says_no_strong_match(mini_jungle):
    for app in (open_page(mini_jungle, "views/search.py"), open_search(mini_jungle)):  # the whole zoo, one tree
        app.text_input(key="prompt").input("a dog").run()
        assert not app.exception
        assert "no strong match" in app.warning[0].value


def test_the_whole_zoo_answers_a_classifier_concept_from_several_trees_with_images(mini_jungle):
    zoo = ModelZoo.open(mini_jungle)
    classifier_trees = zoo.trees_with_role("classifier")
    concept = Counter(label for record in zoo.select(tree=classifier_trees).records
                      for label in record.labels).most_common(1)[0][0]
    app = open_page(mini_jungle, "views/search.py")
    assert app.selectbox(key="search_tree").value == "All trees"
    app.text_input(key="prompt").input(f"a {concept}").run()
    assert not app.exception and not app.warning
    hits = app.dataframe[0].value
    assert len(set(hits["tree"])) >= 2, hits
    classifier_hits = [zoo.record(unquote(href.split("model=", 1)[1])) for href, tree
                       in zip(hits["model"], hits["tree"]) if tree in classifier_trees]
    assert classifier_hits and all(concept in record.labels for record in classifier_hits), hits
    assert all(0.0 <= score <= 1.0 for score in hits["score"])


def test_an_example_prompt_is_a_button_that_searches(mini_jungle):
    app = open_search(mini_jungle)
    example = next(button for button in app.button if button.key and button.key.startswith("example_"))
    example.click().run()
    assert not app.exception
    assert app.text_input(key="prompt").value == example.label
    assert app.dataframe[0].value["concept"][0] == example.label.removeprefix("a ")


def test_a_long_prompt_is_cut_in_the_heading_and_the_address(mini_jungle):
    app = open_search(mini_jungle)
    app.text_input(key="prompt").input("a red star " + "and more words " * 30).run()
    assert not app.exception
    heading = next(h.value for h in app.subheader if h.value.startswith("Models for"))
    assert len(heading) < 90 and heading.endswith("…”")
    assert len(app.query_params["prompt"][0] if isinstance(app.query_params["prompt"], list)
               else app.query_params["prompt"]) <= 200


def test_the_page_and_prompt_in_the_address_open_the_search_results(mini_jungle):
    concept = held_out_concept(mini_jungle)
    app = app_on(mini_jungle, page="search", prompt=concept, tree="mini-sd")
    assert not app.exception
    assert app.title[0].value == "Search models with words"
    assert app.dataframe[0].value["concept"][0] == concept


def test_what_is_this_model_names_a_held_out_models_concept_first(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="mini-sd", split="test_holdout").records[0]
    app = open_search(mini_jungle)
    app.radio(key="search_mode").set_value("What is this model?").run()
    app.selectbox(key="what_model").set_value(model.id).run()
    assert not app.exception
    assert app.dataframe[0].value["label"][0] == model.labels[0]
    assert app.query_params["mode"] in (["model"], "model")


def test_a_cnn_uploaded_to_what_is_this_model_is_refused_without_a_server_path(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="cnn-attributes").records[0]
    app = open_search(mini_jungle)
    app.radio(key="search_mode").set_value("What is this model?").run()
    app.radio(key="what_source").set_value("Upload a model file").run()
    app.file_uploader(key="what_upload").upload("cnn.safetensors", model.path.read_bytes()).run()
    assert not app.exception
    message = app.error[0].value
    assert "missing" in message and "probex-uploads" not in message and "/tmp" not in message


@pytest.mark.parametrize("name, content, expected", [
    ("weights.bin", b"\x80\x04pickle", "not a .safetensors file"),
    ("weights.safetensors", b"\xff" * 64, "corrupt"),
    ("weights.safetensors", save({"w": torch.zeros(5, 7)}), "wrong architecture"),
], ids=["pickle", "corrupt", "wrong-architecture"])
def test_a_bad_upload_shows_an_error_in_plain_words_not_a_traceback(mini_jungle, name, content, expected):
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload(name, content).run()
    assert not app.exception
    message = app.error[0].value
    assert expected in message
    assert not any(len(word) >= 10 and word.isdigit() for word in message.split())


def test_a_too_large_upload_is_refused_before_it_is_read(mini_jungle, monkeypatch):
    from explorer import uploads

    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload("big.safetensors", b"\0" * 2000).run()
    assert not app.exception
    assert "larger than" in app.error[0].value


def test_inspect_predicts_an_uploaded_lora_models_concept_and_drafts_its_model_card(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="mini-sd", split="test").records[0]
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload("lora.safetensors", model.path.read_bytes()).run()
    assert not app.exception
    assert "mini-sd" in app.success[0].value
    assert any(f"**{model.labels[0]}**" in markdown.value for markdown in app.markdown)
    card = app.code[0].value
    assert card.startswith("---\nbase_model: \"mini-sd\"\nbase_model_relation: adapter")
    assert model.labels[0] in card


def test_an_untuned_root_is_recognised_and_its_predictions_carry_a_caveat(mini_jungle):
    root = jungle.SHIPPED / "roots" / "cnn-attributes.safetensors"
    app = open_page(mini_jungle, "views/inspect.py")
    app.file_uploader(key="inspect_upload").upload("root.safetensors", root.read_bytes()).run()
    assert not app.exception
    assert "cnn-attributes" in app.success[0].value
    assert "root" in texts(app.warning)


def test_a_forest_model_is_an_unknown_tree_and_the_message_names_the_nearest_tree_and_its_radius(mini_jungle):
    app = open_page(mini_jungle, "views/inspect.py")
    app.radio(key="inspect_source").set_value("Use a model of this population").run()
    forest = next(option for option in app.selectbox(key="inspect_example").options if "a tree of its own" in option)
    app.selectbox(key="inspect_example").set_value(forest.split(" · ")[0]).run()
    assert not app.exception
    warning = app.warning[0].value
    assert "Unknown tree" in warning and "cnn-" in warning and "within" in warning


def test_the_model_address_opens_its_page_with_metadata_images_predictions_and_a_model_card(mini_jungle):
    model = ModelZoo.open(mini_jungle).select(tree="mini-sd", split="train").records[0]
    app = app_on(mini_jungle, model=model.id)
    assert not app.exception
    assert app.title[0].value == "Model" and shown(app.subheader[0].value) == model.id
    facts = app.dataframe[0].value
    assert dict(zip(facts["field"], facts["value"]))["trained on"] == model.labels[0]
    assert len(app.image) >= len(model.images[:24])
    assert "mini-sd" in app.success[0].value
    assert any(model.labels[0] in markdown.value for markdown in app.markdown)
    assert "nearest_documented_models" in app.code[0].value


def test_a_classifier_models_page_shows_the_images_of_the_classes_it_was_trained_on(mini_jungle):
    zoo = ModelZoo.open(mini_jungle)
    model = zoo.select(tree=zoo.trees_with_role("classifier")[0], split="test").records[0]
    assert model.images and {image.parent.name for image in model.images} == {safe_name(label) for label in model.labels}
    app = app_on(mini_jungle, model=model.id)
    assert not app.exception
    assert not any("no training images" in caption for caption in texts(app.caption))
    assert len(app.image) >= min(len(model.images), 24)


def test_an_unknown_model_in_the_address_says_so(mini_jungle):
    app = app_on(mini_jungle, model="no/such-model")
    assert not app.exception
    assert "There is no model “no/such-model”" in app.error[0].value


def atlas_models(spec: dict) -> list[dict]:
    return [trace for trace in spec["data"] if trace.get("customdata") and min(trace["customdata"]) >= 0
            and trace.get("name") not in ("matches", "more like these")]


def test_the_atlas_colours_by_a_continuous_field_with_a_colour_scale(mini_jungle):
    app = open_page(mini_jungle, "views/atlas.py")
    app.selectbox(key="atlas_colour").set_value("lr").run()
    assert not app.exception
    (models,) = atlas_models(chart_specs(app)[0])
    assert models["type"] == "scattergl" and models["marker"]["showscale"]
    assert app.query_params["colour"] in (["lr"], "lr")


def test_typing_purple_highlights_the_purple_models_and_dims_the_rest(mini_jungle):
    app = open_page(mini_jungle, "views/atlas.py")
    app.text_input(key="atlas_find").input("purple").run()
    assert not app.exception
    spec = chart_specs(app)[0]
    rings = next(trace for trace in spec["data"] if trace.get("name") == "matches")
    zoo = ModelZoo.open(mini_jungle).select(tree="mini-sd")
    purple = sum(1 for record in zoo.records if "purple" in record.labels[0])
    assert len(rings["customdata"]) == purple > 0
    assert all(isinstance(trace["marker"]["opacity"], list) for trace in atlas_models(spec))
    assert app.query_params["find"] in (["purple"], "purple")


def test_a_shared_atlas_address_reopens_its_colour_and_selection(mini_jungle):
    app = app_on(mini_jungle, page="atlas", colour="seen", sel="0-11")
    assert not app.exception
    assert app.title[0].value == "Atlas of the weight-language space"
    assert app.selectbox(key="atlas_colour").value == "seen"
    selected = next(frame.value for frame in app.dataframe if "seen" in frame.value.columns)
    assert len(selected) == 12
    spec = chart_specs(app)[0]
    assert sum(len(trace.get("selectedpoints", [])) for trace in atlas_models(spec)) == 12
    assert any("12 models selected" in markdown.value for markdown in app.markdown)


def test_more_like_these_highlights_models_without_filtering(mini_jungle):
    app = app_on(mini_jungle, page="atlas", sel="0-4")
    app.toggle(key="atlas_sel_more").set_value(True).run()
    assert not app.exception
    spec = chart_specs(app)[0]
    rings = next(trace for trace in spec["data"] if trace.get("name") == "more like these")
    assert len(rings["customdata"]) >= 10 and not set(rings["customdata"]) & set(range(5))
    assert sum(len(trace["x"]) for trace in atlas_models(spec)) == len(app.session_state["atlas_more:mini-sd"])


def test_the_experts_form_defaults_to_the_recommended_layer_and_prints_integers_as_integers(mini_jungle):
    app = open_page(mini_jungle, "views/experts.py")
    app.selectbox(key="experts_tree").set_value("cnn-attributes").run()
    assert not app.exception
    assert app.selectbox(key="train_layer").value == jungle.recommended_layers()["cnn-attributes"]
    table = next(frame.value for frame in app.dataframe if "parameters" in frame.value.columns)
    assert all("." not in str(value) for value in table["parameters"])


def test_the_experts_page_starts_from_the_views_a_trees_role_names_and_shows_its_multi_view_expert(mini_jungle):
    app = open_page(mini_jungle, "views/experts.py")
    app.selectbox(key="experts_tree").set_value("cnn-own-heads").run()
    assert not app.exception and app.radio(key="train_views").value == "xtxu"
    table = next(frame.value for frame in app.dataframe if "accuracy" in frame.value.columns)
    assert list(table["expert"]) == ["ProbeX", "multi-view ProbeX (xtxu)", "Dense", "StatNN"]
    app.selectbox(key="experts_tree").set_value("cnn-attributes").run()
    assert app.radio(key="train_views").value == "xu"  # the next tree starts from its own


def test_an_expert_trained_in_the_background_survives_a_page_change_and_is_used_by_search(mini_jungle):
    app = open_page(mini_jungle, "views/experts.py")
    app.selectbox(key="experts_tree").set_value("mini-sd").run()
    app.number_input[0].set_value(3)
    app.button[0].click().run()
    assert not app.exception
    app.switch_page("views/home.py").run()  # leave while it trains
    job = app.session_state["background_jobs"][(str(mini_jungle), "mini-sd", "train")]
    job.thread.join(timeout=300)
    app.switch_page("views/experts.py").run()
    assert not app.exception
    assert app.selectbox(key="experts_tree").value == "mini-sd"  # the tree box came back
    assert "now the mini-sd expert" in app.success[0].value
    assert any("(trained in this session)" in markdown.value for markdown in app.markdown)
    metrics = list(next(frame.value for frame in app.dataframe if "metric" in frame.value.columns)["metric"])
    assert metrics[0] == "zero-shot validation top-1 (val_holdout)"
    assert any(metric.startswith("zero-shot top-1 over") for metric in metrics)
    app.switch_page("views/search.py").run()
    app.selectbox(key="search_tree").set_value("mini-sd").run()
    assert not app.exception
    assert "trained in this session" in texts(app.caption)


def test_the_experts_page_trains_a_multi_view_expert(mini_jungle):
    app = open_page(mini_jungle, "views/experts.py")
    app.selectbox(key="experts_tree").set_value("cnn-attributes").run()
    app.number_input[0].set_value(2)
    app.radio(key="train_views").set_value("all")
    app.button[0].click().run()
    assert not app.exception
    job = app.session_state["background_jobs"][(str(mini_jungle), "cnn-attributes", "train")]
    job.thread.join(timeout=300)
    app.run()
    assert not app.exception
    expert = app.session_state["trained_experts"][str(mini_jungle)]["cnn-attributes"].expert
    assert expert.get_params()["views"] == "all"


def test_a_training_job_can_be_cancelled():
    from explorer.jobs import Cancelled, Job

    job = Job(kind="train", title="t")
    job.progress(1, 10, "epoch 1")
    assert job.eta() is not None and job.eta() >= 0
    job.cancel.set()
    with pytest.raises(Cancelled):
        job.progress(2, 10, "epoch 2")


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


def test_a_missing_population_folder_is_an_error_in_the_page(tmp_path):
    app = app_on(tmp_path / "nowhere")
    assert not app.exception
    assert "no such folder" in app.error[0].value
