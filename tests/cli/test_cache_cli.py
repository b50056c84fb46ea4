"""`probex cache info` and `probex cache clear`."""

from probex.cli import main


def test_info_and_clear_through_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    (tmp_path / "banks").mkdir()
    (tmp_path / "banks" / "head.weight.aaaa.npy").write_bytes(b"x" * 2000)
    (tmp_path / "banks" / "head.weight.aaaa.json").write_bytes(b"{}")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "minilm-b.safetensors").write_bytes(b"x" * 100)
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "banks           1     2.0 kB" in out and "text            1      100 B" in out and "total 2.1 kB" in out
    assert main(["cache", "clear", "--kind", "banks"]) == 0
    assert "removed 1 entries (2.0 kB) of banks" in capsys.readouterr().out
    assert not any((tmp_path / "banks").iterdir()) and (tmp_path / "text" / "minilm-b.safetensors").exists()
    assert main(["cache", "clear", "--older-than", "30"]) == 0  # the text entry was just written: kept
    assert "removed 0 entries" in capsys.readouterr().out


def test_info_shows_the_size_cap_and_refuses_a_nonsense_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PROBEX_CACHE", str(tmp_path))
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", "2.5")
    assert main(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "of 2.5 GB" in out and "cap 2.5 GB ($PROBEX_CACHE_MAX_GB)" in out and "least recently used" in out
    monkeypatch.delenv("PROBEX_CACHE_MAX_GB")
    assert main(["cache", "info"]) == 0
    assert "cap 20 GB (default; set $PROBEX_CACHE_MAX_GB)" in capsys.readouterr().out
    monkeypatch.setenv("PROBEX_CACHE_MAX_GB", "lots")
    assert main(["cache", "info"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PROBEX_CACHE_MAX_GB" in err
