"""The tqdm progress adapter."""

import io

from probex.progress import tqdm_progress


def test_tqdm_progress_draws_the_last_message(monkeypatch):
    import tqdm.auto

    stream = io.StringIO()
    original = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda **kw: original(file=stream, **kw))
    with tqdm_progress("training", disable=False) as progress:
        for epoch in range(1, 4):
            progress(epoch, 3, f"epoch {epoch}")
    text = stream.getvalue()
    assert "training" in text and "3/3" in text and "epoch 3" in text
