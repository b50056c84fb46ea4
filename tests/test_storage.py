"""Atomic writes: a reader never sees a half-written file or folder."""

import os

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


# -- outputs checked before the work ----------------------------------------------------------


def test_an_output_file_must_be_creatable_and_not_a_folder(tmp_path):
    from probex.errors import ProbeXError
    from probex.storage import check_output_path

    assert check_output_path(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    with pytest.raises(ProbeXError, match="is a folder"):
        check_output_path(tmp_path)
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ProbeXError, match="is a file, not a folder"):
        check_output_path(tmp_path / "plain" / "out.csv")


def test_an_output_folder_may_replace_only_nothing_or_what_is_ours(tmp_path):
    from probex.errors import ProbeXError
    from probex.storage import check_output_path

    folder = tmp_path / "out"
    check_output_path(folder, folder=True)  # missing: fine
    folder.mkdir()
    check_output_path(folder, folder=True)  # empty: fine
    (folder / "thesis.tex").write_text("mine")
    with pytest.raises(ProbeXError, match="other files"):
        check_output_path(folder, "--out", folder=True)
    check_output_path(folder, folder=True, ours=lambda path: True)
    with pytest.raises(ProbeXError, match="is a file"):
        check_output_path(folder / "thesis.tex", folder=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere: a read-only folder cannot be checked as root")
def test_a_read_only_folder_is_refused(tmp_path):
    from probex.errors import ProbeXError
    from probex.storage import check_output_path

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ProbeXError, match="not writable"):
            check_output_path(locked / "out.csv")
    finally:
        locked.chmod(0o700)
