"""Family 1: saving never destroys what it did not write.

Every kind of save (expert, router, mixture, report folder, jungle folder, sweep results, chart,
export) is pointed at every kind of target that is not its own: a user's folder, a file, a link,
another kind of probex folder, its own folder with a user's file added. Each is refused with a
clear message and the target is left exactly as it was; its own earlier output is replaced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hostile import changed, snapshot, user_folder
from probex.errors import ProbeXError
from probex.experts.classifier import ProbeXClassifier
from probex.experts.moe import MixtureOfExperts
from probex.storage import atomic_directory
from probex.trees.router import TreeRouter
from probex.zoo import ModelZoo


def _fitted(ground):
    zoo = ModelZoo.open(ground["zoo"])
    bank = zoo.bank("fc1.weight", cache=False)
    expert = ProbeXClassifier(n_probes=2, proj_dim=2, rep_dim=2, epochs=1, device="cpu").fit(bank)
    router = TreeRouter(n_trees=2).fit(zoo)
    mixture = MixtureOfExperts.from_experts(router, {name: expert for name in router.tree_names_},
                               layers={name: "fc1.weight" for name in router.tree_names_})
    return expert, router, mixture


def _targets(root: Path) -> dict[str, Path]:
    """Targets that are not the saver's own: (name -> path), each built fresh."""
    targets = {"user-folder": user_folder(root / "user")}
    (root / "file").write_text("a user's file\n")
    targets["file"] = root / "file"
    (root / "link-target").mkdir()
    (root / "link-target" / "keep.txt").write_text("keep\n")
    (root / "link").symlink_to(root / "link-target")
    targets["link-to-folder"] = root / "link"
    nested = root / "hf-model"
    nested.mkdir()
    (nested / "config.json").write_text('{"architectures": ["BertModel"]}')  # a Hub model folder, no probex format
    (nested / "model.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}      ")
    targets["hub-model-folder"] = nested
    return targets


SAVERS = {
    "expert": lambda objects, path: objects[0].save(path),
    "router": lambda objects, path: objects[1].save(path),
    "mixture": lambda objects, path: objects[2].save(path),
}


@pytest.fixture(scope="module")
def fitted(ground):
    return _fitted(ground)


def test_every_save_refuses_every_foreign_target_and_leaves_it_untouched(fitted, tmp_path):
    cases = 0
    for saver_name, save in SAVERS.items():
        for target_name, target in _targets(tmp_path / saver_name).items():
            before = snapshot(tmp_path)
            with pytest.raises(ProbeXError) as caught:
                save(fitted, target)
            assert str(target) in str(caught.value) or target.name in str(caught.value), (saver_name, target_name)
            assert changed(before, snapshot(tmp_path)) == [], (saver_name, target_name)
            cases += 1
    assert cases == 12


def test_a_save_refuses_another_kind_of_probex_folder_and_its_own_folder_with_a_users_file(fitted, tmp_path):
    expert, router, mixture = fitted
    router.save(tmp_path / "router")
    with pytest.raises(ProbeXError, match="probex-router"):
        expert.save(tmp_path / "router")
    expert.save(tmp_path / "expert")
    (tmp_path / "expert" / "notes.md").write_text("my notes on this expert\n")
    with pytest.raises(ProbeXError, match="notes.md"):
        expert.save(tmp_path / "expert")
    assert (tmp_path / "expert" / "notes.md").read_text() == "my notes on this expert\n"


def test_a_save_replaces_its_own_earlier_output_and_leaves_nothing_beside_it(fitted, tmp_path):
    for name, save in SAVERS.items():
        save(fitted, tmp_path / name)
        save(fitted, tmp_path / name)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(SAVERS)


def test_a_save_killed_half_way_keeps_the_old_folder_whole(tmp_path):
    with atomic_directory(tmp_path / "expert", "probex-expert") as tmp:
        (tmp / "config.json").write_text("old")
    for _ in range(3):
        with pytest.raises(KeyboardInterrupt):
            with atomic_directory(tmp_path / "expert", "probex-expert") as tmp:
                (tmp / "config.json").write_text("half")
                raise KeyboardInterrupt
    assert (tmp_path / "expert" / "config.json").read_text() == "old"
    assert [path.name for path in tmp_path.iterdir()] == ["expert"]


def test_report_and_jungle_folders_refuse_a_users_folder(ground, tmp_path):
    from probex.experiments.report import write_report
    from probex.jungle.build import build_jungle

    user = user_folder(tmp_path / "user")
    before = snapshot(tmp_path)
    with pytest.raises(ProbeXError):
        write_report({"zoo": "z", "models": 0, "params": {}, "seconds": 0, "sweeps": {}}, user)
    with pytest.raises(ProbeXError):
        build_jungle(user, size="small")
    assert changed(before, snapshot(tmp_path)) == []


def test_sweep_results_are_never_appended_to_a_users_file(ground, tmp_path):
    from probex.experiments.sweep import sweep_layers

    zoo = ModelZoo.open(ground["zoo"]).select(tree="tree-a")
    for content in ("my thesis\n", '{"my": "data"}\n', "[1, 2]\n", "\x00\x01binary"):
        mine = tmp_path / "results.jsonl"
        mine.write_text(content)
        with pytest.raises(ProbeXError, match="not a probex sweep results file"):
            sweep_layers(zoo, layers=["fc1.weight"], params={"epochs": 1}, results=mine)
        assert mine.read_text() == content


def test_exports_and_charts_never_overwrite_a_users_file(ground, tmp_path, capsys):
    from probex.cli import main

    cases = 0
    for name, content in (("table.csv", "name,value\n"), ("table.parquet", "PAR1 mine"), ("chart.html", "<html>mine</html>")):
        mine = tmp_path / name
        mine.write_text(content)
        if name.endswith("html"):
            argv = ["route", str(ground["zoo"]), "--html", str(mine)]
        else:
            argv = ["export", str(ground["zoo"]), str(mine)]
        assert main(argv) == 2
        assert mine.read_text() == content
        cases += 1
    assert cases == 3 and "not written by probex" in capsys.readouterr().err


def test_a_chart_probex_wrote_is_replaced_on_the_next_run(ground, tmp_path, capsys):
    from probex.cli import main

    chart = tmp_path / "trees.html"
    assert main(["route", str(ground["zoo"]), "--n-trees", "2", "--html", str(chart)]) == 0
    first = chart.stat().st_mtime_ns
    os.utime(chart, ns=(first - 10**9, first - 10**9))
    assert main(["route", str(ground["zoo"]), "--n-trees", "2", "--html", str(chart)]) == 0
    assert chart.stat().st_mtime_ns > first - 10**9  # rewritten: its own output is not refused
