"""Every page of the explorer on a user's zoo: two jungle trees renamed, with no roles, experts or sweeps shipped."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from probex.zoo import ModelZoo
from tests.user_zoo import copy_as_user_zoo

APP = Path(__file__).resolve().parents[2] / "explorer" / "app.py"
PAGES = ["views/home.py", "views/trees.py", "views/experts.py", "views/atlas.py", "views/search.py",
         "views/inspect.py"]


@pytest.fixture(scope="module")
def small_user_zoo(small_jungle, tmp_path_factory):
    per_split = {"train": 30, "val": 8, "test": 10, "val_holdout": 16, "test_holdout": 16}
    return copy_as_user_zoo(small_jungle, tmp_path_factory.mktemp("small-user-zoo"),
                            {"cnn-supervised": "alpha", "mixer-supervised": "gamma", "mini-sd": "beta"}, per_split)


def open_page(population: Path, page: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=180)
    app.session_state["population_path"] = str(population)
    return app.run().switch_page(page).run()


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_a_renamed_copy_of_jungle_trees(small_user_zoo, page):
    app = open_page(small_user_zoo, page)
    assert not app.exception, app.exception
    assert not app.error, [error.value for error in app.error]
    assert app.title


def test_the_trees_page_finds_the_renamed_trees(small_user_zoo):
    app = open_page(small_user_zoo, "views/trees.py")
    text = " ".join(str(element.value) for element in app.markdown) + " ".join(str(m.value) for m in app.metric)
    zoo = ModelZoo.open(small_user_zoo)
    assert zoo.trees == ["alpha", "beta", "gamma"]
    assert "alpha" in text or any("alpha" in str(frame.value) for frame in app.dataframe)
