"""Atomic writes: a reader never sees a half-written file or folder."""

import pytest

from probex.storage import atomic_directory, atomic_path, atomic_write_json


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


def test_atomic_directory_replaces_the_folder_as_a_whole(tmp_path):
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
    with atomic_directory(tmp_path / "d") as tmp:
        (tmp / "y").write_text("2")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["y"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
