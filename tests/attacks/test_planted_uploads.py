"""Family 5: uploads on a shared machine. A private folder per process; no planted file or link is ever read.

The attacker is another user of the machine (or a stale file) at the places an upload would be
looked for: the old shared ``$TMPDIR/probex-uploads/<hash>/<name>``, or the expected file in our
folder replaced by a link or another file of the same size. The upload that is read is always
the one the user sent; its header is parsed once per process.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from explorer import uploads
from explorer.uploads import UploadError, open_upload, upload_folder


def model(value: float) -> bytes:
    return save({"fc.weight": torch.full((3, 4), value)})


def _read_value(zoo) -> float:
    from probex.zoo.safefile import read_tensors

    return float(read_tensors(zoo.records[0].path)["fc.weight"][0, 0])


def test_the_upload_folder_is_private_fresh_and_not_named_in_advance():
    folder = upload_folder()
    mode = stat.S_IMODE(folder.stat().st_mode)
    assert mode == 0o700 and folder.stat().st_uid == os.getuid()
    assert folder.name.startswith("probex-uploads-") and folder.name != "probex-uploads"
    assert folder.parent == Path(tempfile.gettempdir())


def test_a_file_planted_at_the_old_shared_path_is_never_read(tmp_path):
    real, planted = model(1.0), model(2.0)
    assert len(real) == len(planted)
    shared = Path(tempfile.gettempdir()) / "probex-uploads"
    made = not shared.exists()
    old = shared / hashlib.sha256(real).hexdigest()[:24]
    old.mkdir(parents=True, exist_ok=True)
    (old / "mine.safetensors").write_bytes(planted)
    try:
        assert _read_value(open_upload("mine.safetensors", real)) == 1.0
    finally:  # leave /tmp as it was
        shutil.rmtree(shared if made else old, ignore_errors=True)


PLANTS = {
    "a link to another model": lambda path, other: path.symlink_to(other),
    "another model of the same size": lambda path, other: path.write_bytes(other.read_bytes()),
    "a FIFO": lambda path, other: os.mkfifo(path),
}


@pytest.mark.parametrize("case", list(PLANTS))
def test_something_planted_in_place_of_an_earlier_upload_is_replaced_not_read(case, tmp_path):
    real = model(3.0)
    path = open_upload("a.safetensors", real).records[0].path
    other = tmp_path / "other.safetensors"
    other.write_bytes(model(4.0))
    path.unlink()
    PLANTS[case](path, other)
    uploads._opened.clear()  # a new page session: the upload is opened again from its file
    assert _read_value(open_upload("a.safetensors", real)) == 3.0
    assert not path.is_symlink() and path.is_file()


def test_a_rerun_parses_nothing_it_parsed_before(monkeypatch):
    from probex.zoo import records

    calls = []
    real_read = records.read_header
    monkeypatch.setattr(records, "read_header", lambda path: calls.append(path) or real_read(path))
    data = model(5.0)
    first = open_upload("b.safetensors", data)
    for _ in range(5):
        assert open_upload("b.safetensors", data) is first
    assert len(calls) == 1


def test_a_hostile_upload_is_refused_once_and_the_refusal_is_remembered(monkeypatch):
    from probex.zoo import records

    count = 200_000
    entries = b",".join(b'"t%07d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(count))
    header = b"{" + entries + b"}"
    data = len(header).to_bytes(8, "little") + header
    monkeypatch.setenv("PROBEX_MAX_TENSORS", "1000")
    calls = []
    real_read = records.read_header
    monkeypatch.setattr(records, "read_header", lambda path: calls.append(path) or real_read(path))
    for _ in range(3):
        with pytest.raises(UploadError, match="number of tensors"):
            open_upload("many.safetensors", data)
    assert len(calls) == 1
