import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from probex.experts.nn import ProbeXNetwork
from probex.experts.training import adam


def _network() -> ProbeXNetwork:
    torch.manual_seed(0)
    return ProbeXNetwork([(6, 10)], 3)


def test_the_experts_optimiser_is_fused_on_the_cpu():
    optimizer = adam(_network())
    assert optimizer.defaults["fused"] is True
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["weight_decay"] == 1e-5


def test_the_fused_update_follows_torchs_default_adam():
    fused_net, plain_net = _network(), _network()
    fused = adam(fused_net, lr=1e-2, weight_decay=1e-4)
    plain = torch.optim.Adam(plain_net.parameters(), lr=1e-2, weight_decay=1e-4)
    X, y = torch.randn(16, 6, 10), torch.randint(0, 3, (16,))
    for _ in range(20):
        for network, optimizer in ((fused_net, fused), (plain_net, plain)):
            loss = torch.nn.functional.cross_entropy(network([X]), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    moved = 0.0
    for (name, a), b, start in zip(fused_net.named_parameters(), plain_net.parameters(), _network().parameters()):
        a, b, start = a.detach(), b.detach(), start.detach()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
        moved = max(moved, float((a - start).abs().max()))
    assert moved > 0.05  # the networks really trained


def test_frozen_parameters_are_left_out():
    network = _network()
    network.encoders[0].probes.requires_grad_(False)
    assert sum(len(group["params"]) for group in adam(network).param_groups) == len(list(network.parameters())) - 1


def test_set_threads_reads_the_environment_and_refuses_nonsense(monkeypatch):
    from probex import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("PROBEX_THREADS", raising=False)
        assert 1 <= set_threads() == torch.get_num_threads() <= (os.cpu_count() or 1)  # nothing asked: from the load
        monkeypatch.setenv("PROBEX_THREADS", "1")
        assert set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("PROBEX_THREADS", "many")
        with pytest.raises(ValueError, match="PROBEX_THREADS"):
            set_threads()
        with pytest.raises(ValueError, match=">= 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("cores, busy, expected", [(2, 0.0, 2), (2, 0.3, 2), (2, 1.0, 1), (2, 0.7, 1), (2, 5.0, 1),
                                                   (16, 3.2, 13), (1, 0.0, 1)])
def test_default_threads_are_the_cores_other_processes_leave_idle(monkeypatch, cores, busy, expected):
    from probex.experts import training

    monkeypatch.setattr(training.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(training, "busy_cores", lambda: busy)
    assert training.default_threads() == expected


def test_a_process_busy_right_now_leaves_one_core_fewer_for_torch():
    from probex.experts.training import busy_cores, default_threads

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert busy_cores() >= 1.0  # counted at once, before the load average catches up
        assert default_threads() <= max(1, (os.cpu_count() or 1) - 1)
    finally:
        spinner.kill()
        spinner.wait()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_training_streamed_above_the_device_copy_limit_gives_the_same_expert(dtype, monkeypatch):
    from probex import ProbeXClassifier
    from probex.experts import training
    from probex.zoo.stack import as_stack
    from synthetic import make_population

    train, val, test = make_population(120, "tree", d_W=12, d_H=10, n_classes=5, seed=3).split(80, 20, 20)
    X, X_val = train.X.to(dtype), val.X.to(dtype)
    params = dict(n_probes=8, proj_dim=8, rep_dim=8, epochs=8, batch_size=16, device="cpu")
    copied = ProbeXClassifier(**params).fit(X, train.Y, val=(X_val, val.Y))
    monkeypatch.setenv("PROBEX_MEMORY_BUDGET", "1024")  # below one layer: every batch is read from the stack on its own
    assert not training.fits_in_memory([as_stack(X)])
    streamed = ProbeXClassifier(**params).fit(X, train.Y, val=(X_val, val.Y))
    # a streamed batch is read in storage order: the same models, summed in another order (float rounding only)
    assert np.allclose([log.train_loss for log in streamed.history_], [log.train_loss for log in copied.history_],
                       rtol=1e-5, atol=0)
    assert streamed.best_epoch_ == copied.best_epoch_
    assert np.allclose(streamed.predict_proba(test.X.to(dtype)), copied.predict_proba(test.X.to(dtype)), atol=1e-5)
