"""Atomic writes, folders replaced only when probex wrote them, safe names, regular files only."""

import json
import os

import pytest

from probex.errors import ProbeXError, ZooError
from probex.storage import (
    ARTIFACT_FILE,
    atomic_directory,
    atomic_path,
    atomic_write_json,
    check_output_file,
    check_replaceable,
    claim_directory,
    mark_output_file,
    open_regular,
    safe_name,
    written_by_probex,
)


def test_atomic_path_renames_on_success(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"data")
        assert not (tmp_path / "a.bin").exists()
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_atomic_path_leaves_the_old_file_when_the_writer_fails(tmp_path):
    atomic_write_json(tmp_path / "c.json", {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "c.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "c.json").read_text().strip() == '{\n  "v": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["c.json"]


def test_atomic_directory_replaces_its_own_folder_as_a_whole(tmp_path):
    with atomic_directory(tmp_path / "d", "thing") as tmp:
        (tmp / "x").write_text("1")
    with atomic_directory(tmp_path / "d", "thing") as tmp:
        (tmp / "y").write_text("2")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [ARTIFACT_FILE, "y"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_atomic_directory_refuses_a_users_folder_and_leaves_it_untouched(tmp_path):
    user = tmp_path / "thesis"
    (user / "sub").mkdir(parents=True)
    (user / "thesis.tex").write_text("chapter 1")
    (user / "sub" / "data.csv").write_text("1,2")
    with pytest.raises(ProbeXError, match="not written by probex"):
        with atomic_directory(user, "thing") as tmp:
            (tmp / "x").write_text("1")
    assert (user / "thesis.tex").read_text() == "chapter 1" and (user / "sub" / "data.csv").read_text() == "1,2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no temporary left behind


def test_atomic_directory_refuses_its_own_folder_once_a_user_added_a_file(tmp_path):
    with atomic_directory(tmp_path / "d", "thing") as tmp:
        (tmp / "x").write_text("1")
    (tmp_path / "d" / "notes.txt").write_text("mine")
    with pytest.raises(ProbeXError, match="notes.txt"):
        check_replaceable(tmp_path / "d", "thing")
    assert (tmp_path / "d" / "notes.txt").read_text() == "mine"


def test_atomic_directory_refuses_an_artifact_of_another_kind_a_file_and_a_link(tmp_path):
    with atomic_directory(tmp_path / "router", "probex-router") as tmp:
        (tmp / "router.json").write_text("{}")
    with pytest.raises(ProbeXError, match="probex-router"):
        check_replaceable(tmp_path / "router", "probex-expert")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ProbeXError, match="not a folder"):
        check_replaceable(tmp_path / "file", "thing")
    (tmp_path / "link").symlink_to(tmp_path / "router")
    with pytest.raises(ProbeXError, match="symbolic link"):
        check_replaceable(tmp_path / "link", "probex-router")


def test_atomic_directory_keeps_the_old_folder_when_the_writer_fails(tmp_path):
    with atomic_directory(tmp_path / "d", "thing") as tmp:
        (tmp / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "d", "thing") as tmp:
            (tmp / "x").write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "d" / "x").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_a_legacy_recogniser_lets_an_unmarked_folder_of_the_kind_be_replaced(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    with atomic_directory(tmp_path / "old", "thing", legacy=lambda folder: (folder / "config.json").is_file()) as tmp:
        (tmp / "config.json").write_text('{"new": 1}')
    assert json.loads((tmp_path / "old" / "config.json").read_text()) == {"new": 1}


def test_claim_directory_accepts_new_empty_and_own_folders_only(tmp_path):
    claim_directory(tmp_path / "report", "probex-report")
    (tmp_path / "report" / "report.md").write_text("# r")
    assert claim_directory(tmp_path / "report", "probex-report") == tmp_path / "report"
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "report.md").write_text("mine")
    with pytest.raises(ProbeXError, match="not a probex probex-report folder|did not make"):
        claim_directory(tmp_path / "user", "probex-report")
    assert sorted(p.name for p in (tmp_path / "user").iterdir()) == ["report.md"]


@pytest.mark.parametrize("name", ["cnn-supervised", "mini-sd", "mixer-supervised", "forest-001", "ft_0001", "a.b"])
def test_safe_names_stay_as_they_are(name):
    assert safe_name(name) == name


@pytest.mark.parametrize("name", ["../../../x", "/etc/passwd", "runwayml/stable-diffusion-v1-5", "..", ".", "",
                                  "a b", "con", "x\0y", "\x1b[31mred", "a" * 300, "~home", "ζ-tree", "name."])
def test_unsafe_names_become_one_file_name_inside_the_folder(name, tmp_path):
    made = safe_name(name)
    assert "/" not in made and "\0" not in made and made not in (".", "..") and len(made) <= 80
    assert (tmp_path / made).parent == tmp_path and "~" in made


def test_hub_style_names_stay_readable_and_unique():
    assert safe_name("runwayml/stable-diffusion-v1-5").startswith("runwayml--stable-diffusion-v1-5~")
    names = ["a/b", "a--b", "a_b", "a b", "a?b", "a\\b"]
    assert len({safe_name(name) for name in names}) == len(names)


def test_open_regular_refuses_a_fifo_without_blocking(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    with pytest.raises(ZooError, match="FIFO"):
        open_regular(fifo)
    with pytest.raises(ZooError, match="folder"):
        open_regular(tmp_path)


def test_output_files_are_replaced_only_when_probex_wrote_them(tmp_path):
    mine = tmp_path / "chart.html"
    mine.write_text("<html>my own page</html>")
    with pytest.raises(ProbeXError, match="not written by probex"):
        check_output_file(mine)
    ours = tmp_path / "ours.html"
    ours.write_text("<html></html>")
    mark_output_file(ours)
    assert written_by_probex(ours) and check_output_file(ours) == ours
    with pytest.raises(ProbeXError, match="system folder"):
        check_output_file("/proc/probex.html")
