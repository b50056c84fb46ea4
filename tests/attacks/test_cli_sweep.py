"""Bad command lines: every one ends with one line on stderr and exit status 2, never a traceback.

Each invocation is run in-process through ``probex.cli.main`` from a scratch working folder; the
{placeholders} name files of the ``ground`` fixture (a tiny zoo, a user's folder and files).
"""

from __future__ import annotations

import shlex

import pytest

from hostile import snapshot, changed
from probex.cli import main

BAD_INVOCATIONS = [
    # search / zero-shot / export
    "search ''", "search '   '", "search a b c", "search {root}/nowhere 'a red star'", "search -k 0 star",
    "search -k -1 star", "search -k abc star", "search --expert {root}/nowhere star", "search --expert '' star",
    "search --expert {broken} {zoo} star", "zero-shot", "zero-shot -k 0 {notes}", "zero-shot --labels '' {notes}",
    "zero-shot --labels-file {root}/nowhere {notes}", "zero-shot --labels a --labels-file {notes} {notes}",
    "zero-shot {zoo} {root}/nowhere.safetensors", "export out.txt", "export {csv}", "export /proc/probex.csv",
    "export {zoo} ''",
    # align
    "align --epochs 0", "align --epochs -5", "align --epochs 1e3", "align --text-encoder nope",
    "align --text-encoder open_clip:", "align --out {user}", "align --out {notes}", "align --out /proc/probex",
    "align --epochs 1 --out {user}", "align {root}/nowhere", "align {zoo} --tree nope", "align {zoo} --layers nope",
    # sweep
    "sweep {zoo} --tree tree-a --layers '['", "sweep {zoo} --tree tree-a --layers '(?'", "sweep --shard 5/2", "sweep --shard 1/0", "sweep --shard x",
    "sweep --shard -1/2", "sweep --epochs 0", "sweep --workers 0", "sweep {zoo} --tree tree-a --results {notes}", "sweep {zoo} --tree tree-a --results {jsonl}",
    "sweep {zoo} --tree tree-a --results /proc/probex.jsonl", "sweep --results {user}", "sweep {zoo} --tree tree-a --html /proc/probex.html", "sweep --html {html}",
    "sweep --html out.txt", "sweep {zoo} --tree nope", "sweep --task nope", "sweep --backend nope", "sweep {zoo}",
    # route
    "route", "route {root}/nowhere", "route {zoo} --n-trees 0", "route {zoo} --n-trees -3", "route {zoo} --n-trees 1000",
    "route {zoo} --threshold nan", "route {zoo} --threshold -1", "route {zoo} --threshold inf", "route {zoo} --method nope",
    "route {zoo} --metric l3", "route {zoo} --html /proc/probex.html", "route {zoo} --png /sys/probex.png",
    "route {zoo} --html {html}", "route {zoo} --layer nope", "route {zoo} --fit-split nope",
    "route {zoo} --n-trees 2 --threshold 1", "route {user}",
    # zoo
    "zoo info {root}/nowhere", "zoo info {user}", "zoo info {zoo} --layers -1", "zoo info ''", "zoo info {notes}",
    "zoo bank {zoo} nope", "zoo bank {zoo} fc1.weight --split nope", "zoo bank {zoo} fc1.weight --dtype int8",
    "zoo bank {zoo} fc1.weight --cache-dir /proc/probex", "zoo bank {zoo} fc1.weight --cache-dir {notes}", "zoo",
    # cache
    "cache clear --older-than -1", "cache clear --older-than nan", "cache clear --older-than inf",
    "cache clear --kind nope", "cache clear --older-than abc", "cache",
    # report
    "report --out {user}", "report --out {notes}", "report --epochs 0", "report {root}/nowhere",
    "report {zoo} --out /proc/probex",
    # jungle
    "jungle build", "jungle build --out {user}", "jungle build --out new --size huge", "jungle build --out new --workers 0",
    "jungle build --out new --seed -1", "jungle build --out new --roots {root}/nowhere", "jungle validate {root}/nowhere",
    "jungle validate {user}", "jungle validate --epochs 0", "jungle check {root}/nowhere", "jungle",
    # download
    "download modelj nope", "download repos ../evil", "download repos 'a b'", "download repos owner/name/extra",
    "download modelj MAE --out /proc/probex", "download",
    # global
    "--threads 0 info", "--threads abc info", "nope", "--bogus",
]


def _argv(template: str, ground) -> list[str]:
    return shlex.split(template.format(**{key: str(value) for key, value in ground.items()}))


def test_the_sweep_has_at_least_60_bad_invocations():
    assert len(BAD_INVOCATIONS) >= 60 and len(set(BAD_INVOCATIONS)) == len(BAD_INVOCATIONS)


@pytest.mark.parametrize("template", BAD_INVOCATIONS)
def test_a_bad_invocation_exits_2_with_one_line_and_changes_nothing(template, ground, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    before = snapshot(ground["root"])
    code = main(_argv(template, ground))
    out, err = capsys.readouterr()
    assert code == 2, (template, code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("probex"), (template, err)
    assert "Traceback" not in out + err
    assert changed(before, snapshot(ground["root"])) == [], template
