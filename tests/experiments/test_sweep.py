"""Layer sweeps: one expert per layer, results appended as each layer ends, resumed after a kill."""

import json

import pytest

from probex import jungle
from probex.errors import ZooError
from probex.experiments.sweep import (SWEEP_DEFAULTS, LayerScore, SweepResult, _sweep_key, fit_layer, matrix_layers,
                                      parse_shard, read_sweep, readout_layers, sweep_layers)
from baselines import constant_multilabel_accuracy

FAST = {"epochs": 3, "patience": 3, "seed": 0}
LAYERS = ["conv1.weight", "head.weight"]


@pytest.fixture(scope="module")
def cnn_tree():
    return jungle.load().select(tree="cnn-supervised")


def _lines(path):
    return path.read_text().splitlines()


def test_every_finished_layer_is_appended_to_the_results_file(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    result = sweep_layers(cnn_tree, layers=LAYERS, params={**FAST, "epochs": 30, "patience": 30}, results=results)
    rows = [json.loads(line) for line in _lines(results)]
    assert [row["layer"] for row in rows] == LAYERS
    assert [s.layer for s in result.scores] == LAYERS
    train, test = (cnn_tree.bank("head.weight", split=split) for split in ("train", "test"))
    constant = constant_multilabel_accuracy(train.label_matrix()[0], test.label_matrix(train.label_names)[0])
    assert result.scores[1].test > constant + 0.2  # 30 epochs learn something on the head
    assert result.scores[1].readout and result.best.layer == "conv1.weight"  # the head: measured, never chosen
    assert result.scores[1].test == pytest.approx(result.experts["head.weight"].score(test), abs=1e-4)
    assert result.scores[0].shape == (12, 27)


def test_a_restarted_sweep_trains_only_the_layers_not_yet_finished(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    first = sweep_layers(cnn_tree, layers=LAYERS[:1], params=FAST, results=results)  # "killed" after one layer
    again = sweep_layers(cnn_tree, layers=LAYERS, params=FAST, results=results)
    assert set(again.experts) == {"head.weight"}
    assert again.scores[0] == first.scores[0]
    assert len(_lines(results)) == 2


def test_a_line_cut_short_by_a_kill_is_ignored_and_its_layer_runs_again(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    sweep_layers(cnn_tree, layers=LAYERS[:1], params=FAST, results=results)
    with open(results, "a") as handle:
        handle.write('{"layer": "head.weight", "shape": [12, ')  # the write of head.weight was killed
    again = sweep_layers(cnn_tree, layers=LAYERS, params=FAST, results=results)
    assert set(again.experts) == {"head.weight"}


def test_results_of_other_parameters_are_not_reused(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    sweep_layers(cnn_tree, layers=LAYERS[:1], params=FAST, results=results)
    other = sweep_layers(cnn_tree, layers=LAYERS[:1], params={**FAST, "n_probes": 16}, results=results)
    assert set(other.experts) == {"conv1.weight"}
    assert len(_lines(results)) == 2


def test_multiview_rows_swept_with_fixed_sizes_are_not_reused_and_single_view_keys_are_unchanged():
    """Multi-view None sizes scale with the layer (they were 128): its key changed; ProbeX's did not (the
    shipped sweeps' rows carry the key of the report's params)."""
    import hashlib

    def before(task, params):
        return hashlib.sha256(json.dumps({"task": task, "params": params}, sort_keys=True).encode()).hexdigest()[:16]

    report = {**SWEEP_DEFAULTS, "device": "auto", "seed": 0}
    assert _sweep_key("classes", report) == before("classes", report) == "a500b420eaa89d9e"
    assert _sweep_key("align", {**report, "views": "xu"}) == before("align", {**report, "views": "xu"})
    for views in ("all", "xu+xtu", ["second"]):
        assert _sweep_key("classes", {**report, "views": views}) != before("classes", {**report, "views": views})


def test_a_layer_pattern_selects_matrix_layers_by_name(cnn_tree):
    assert [info.name for info in matrix_layers(cnn_tree, r"^conv")] == ["conv1.weight", "conv2.weight", "conv3.weight"]
    assert all(info.kind != "vector" for info in matrix_layers(cnn_tree))


def test_a_pattern_matching_no_layer_names_the_zoo(cnn_tree):
    with pytest.raises(ZooError, match="no matrix layer matches"):
        sweep_layers(cnn_tree, layers=r"^attention", params=FAST)


def test_an_unknown_task_is_refused(cnn_tree):
    with pytest.raises(ValueError, match="task must be one of"):
        sweep_layers(cnn_tree, task="regression")


def _score(layer, val, n_parameters):
    return LayerScore(layer=layer, shape=(2, 2), val=val, test=None, n_parameters=n_parameters, best_epoch=0, seconds=0.0)


def test_the_best_layer_has_the_highest_validation_and_ties_go_to_the_smaller_expert():
    result = SweepResult("classes", [_score("a", 0.8, 100), _score("b", 0.9, 500), _score("c", 0.9, 200)])
    assert result.best.layer == "c"
    assert [s.layer for s in result.ranked()] == ["c", "b", "a"]
    frame = result.to_frame()
    assert frame.loc[frame.best, "layer"].tolist() == ["c"]


def test_a_read_out_layer_is_ranked_last_and_chosen_only_when_nothing_else_was_swept():
    head = _score("head.weight", 1.0, 50)
    head.readout = True
    result = SweepResult("classes", [_score("a", 0.8, 100), head, _score("c", 0.9, 200)])
    assert result.best.layer == "c" and [s.layer for s in result.ranked()] == ["c", "a", "head.weight"]
    assert SweepResult("classes", [head]).best.layer == "head.weight"


def test_the_classification_head_is_swept_and_flagged_as_the_read_out(cnn_tree, tmp_path):
    assert readout_layers(cnn_tree) == {"head.weight"}  # conv1 also has 12 rows, but is no head
    result = sweep_layers(cnn_tree, layers=LAYERS, params=FAST, results=tmp_path / "sweep.jsonl")
    assert [s.readout for s in result.scores] == [False, True] and result.best.layer == "conv1.weight"
    rows = [json.loads(line) for line in _lines(tmp_path / "sweep.jsonl")]
    assert [row["readout"] for row in rows] == [False, True]


def test_an_alignment_sweep_reports_zero_shot_on_the_held_out_concepts(tmp_path):
    generative = jungle.load().select(tree="mini-sd")
    result = sweep_layers(generative, task="align", layers=["unet.mid.attn.to_q"], params=FAST, results=tmp_path / "a.jsonl")
    score = result.scores[0]
    held_out = {record.labels[0] for record in generative.select(split="test_holdout")}
    assert score.zero_shot_test is not None and score.zero_shot_test > 1 / len(held_out) + 0.2  # chance 1/16
    assert score.test is not None


def test_fit_layer_reports_every_epoch_to_its_progress_callback(cnn_tree):
    seen = []
    expert, score = fit_layer(cnn_tree, "classes", "head.weight", {"epochs": 4, "seed": 0},
                              progress=lambda done, total, log: seen.append((done, total, log.val_score)))
    assert [(done, total) for done, total, _ in seen] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(val is not None for _, _, val in seen)  # validated every epoch
    assert score.best_epoch in (1, 2, 3, 4) and expert.best_epoch_ == score.best_epoch


def test_training_without_a_validation_split_names_the_missing_split(cnn_tree):
    no_val = cnn_tree.select(split=["train", "test"])
    with pytest.raises(ZooError, match="'val'"):
        fit_layer(no_val, "classes", "head.weight", FAST)
    with pytest.raises(ZooError, match="'val'"):
        sweep_layers(no_val, layers=["head.weight"], params=FAST)


def test_a_shard_sweeps_every_nth_layer_into_its_own_file_and_a_later_sweep_gathers_them(cnn_tree, tmp_path):
    results = tmp_path / "sweep.jsonl"
    layers = ["conv1.weight", "conv2.weight", "head.weight"]
    first = sweep_layers(cnn_tree, layers=layers, params=FAST, results=results, shard=(0, 2))
    second = sweep_layers(cnn_tree, layers=layers, params=FAST, results=results, shard=(1, 2))
    assert [s.layer for s in first.scores] == ["conv1.weight", "head.weight"]
    assert [s.layer for s in second.scores] == ["conv2.weight"]
    assert not results.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.shard-0-of-2.jsonl", "sweep.shard-1-of-2.jsonl"]
    gathered = sweep_layers(cnn_tree, layers=layers, params=FAST, results=results)
    assert gathered.experts == {}
    assert [s.layer for s in gathered.scores] == layers
    assert [s.layer for s in read_sweep(results, params=FAST)] == ["conv1.weight", "head.weight", "conv2.weight"]


@pytest.mark.parametrize("text", ["2/2", "1", "-1/3", "a/b"])
def test_a_malformed_shard_is_refused(text):
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard(text)


def test_the_ray_backend_on_two_local_workers_gives_the_local_table(cnn_tree, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra (pip install ray)")
    local = sweep_layers(cnn_tree, layers=LAYERS, params=FAST)
    on_ray = sweep_layers(cnn_tree, layers=LAYERS, params=FAST, backend="ray", workers=2, results=tmp_path / "r.jsonl")
    columns = ["layer", "shape", "val", "test", "n_parameters", "best_epoch"]
    assert on_ray.to_frame()[columns].equals(local.to_frame()[columns])
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    assert set(on_ray.experts) == set(LAYERS)
