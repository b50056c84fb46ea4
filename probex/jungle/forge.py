"""Training many small models at once: stacked parameters, ``torch.func.vmap``, per-model Adam.

Every model keeps its own parameters, optimiser state, learning rate, weight decay and number
of steps; one forward/backward pass serves all of them (the per-model losses are summed, so
each model's gradient is exactly its own), and once a model has taken its last step it is left
out of the pass (fine-tunes with 2-4 epochs: about a quarter less work). On one CPU core this
trains dozens of the jungle's tiny classifiers in the time of a few.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedAdam:
    """Adam over stacked parameters [M, ...] with a learning rate and weight decay per model.

    Weight decay is decoupled from the gradient (as in AdamW): added to the gradient, a decay of
    1e-2 would dominate Adam's normalised steps and pull every model toward zero alike, washing
    out what it learned. A model whose ``active`` flag is off is left untouched by a step.
    """

    def __init__(self, params: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], lr: torch.Tensor,
                 weight_decay: Optional[torch.Tensor] = None, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = dict(params) if isinstance(params, Mapping) else {str(i): p for i, p in enumerate(params)}
        self.lr = lr.float()
        self.weight_decay = weight_decay.float() if weight_decay is not None else torch.zeros_like(self.lr)
        self.betas, self.eps = betas, eps
        self.m = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.t = torch.zeros(lr.shape[0])

    def zero_grad(self) -> None:
        for param in self.params.values():
            param.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        beta1, beta2 = self.betas
        self.t += active.float()
        t = self.t.clamp_min(1)
        for name, param in self.params.items():
            shape = (-1,) + (1,) * (param.ndim - 1)
            on = active.view(shape)
            grad = param.grad
            m = torch.where(on, beta1 * self.m[name] + (1 - beta1) * grad, self.m[name])
            v = torch.where(on, beta2 * self.v[name] + (1 - beta2) * grad**2, self.v[name])
            self.m[name], self.v[name] = m, v
            m_hat = m / (1 - beta1 ** t.view(shape))
            v_hat = v / (1 - beta2 ** t.view(shape))
            lr = self.lr.view(shape)
            update = lr * m_hat / (v_hat.sqrt() + self.eps) + lr * self.weight_decay.view(shape) * param
            param -= torch.where(on, update, torch.zeros_like(update))
            param.grad = None


def train_stacked(
    models: list[nn.Module],
    sample_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: torch.Tensor,
    lr: torch.Tensor,
    weight_decay: torch.Tensor,
) -> list[dict[str, torch.Tensor]]:
    """Train M models of one architecture together; returns each model's final state dict.

    sample_batch(step) -> (inputs [M, B, ...], targets [M, B, ...]): one batch per model.
    loss_fn(outputs [B, ...], targets [B, ...]) -> the mean loss of one model.
    steps, lr, weight_decay: [M] tensors, each model's own.
    """
    params, buffers = stack_module_state(models)
    for tensor in params.values():
        tensor.requires_grad_(True)
    template = models[0]

    def one_model(p, b, inputs, targets):
        return loss_fn(functional_call(template, (p, b), (inputs,)), targets)

    batched_loss = vmap(one_model)
    optimizer = StackedAdam(params, lr, weight_decay)
    for step in range(int(steps.max())):
        inputs, targets = sample_batch(step)  # drawn for every model, so each model's batches do not depend on the others' steps
        active = step < steps
        if bool(active.all()):
            losses = batched_loss(params, buffers, inputs, targets)
        else:  # only the models still training: their gradients are the same, bit for bit, at less cost
            rows = _computed_rows(active)
            losses = batched_loss(_rows_of(params, rows), _rows_of(buffers, rows), _rows_of(inputs, rows), _rows_of(targets, rows))
        losses.sum().backward()
        optimizer.step(active=active)
    return [{name: tensor[i].detach().clone() for name, tensor in params.items()} for i in range(len(models))]


def _computed_rows(active: torch.Tensor) -> torch.Tensor:
    """The models whose forward and backward a step computes: the active ones, and never fewer than two.

    With one model alone, torch computes a convolution with another kernel than the grouped one of
    two or more models, and its gradient differs in the last bits; a second (finished) model, whose
    gradient the optimiser ignores, keeps every model's training bit for bit what it is in the full
    stack (measured for every count from 1 to 63 of 64 models, SmallCNN and wide-mixer LoRA; tested in
    tests/jungle/test_forge.py).
    """
    rows = active.nonzero().flatten()
    if len(rows) == 1 and len(active) > 1:
        other = (~active).nonzero().flatten()[:1]
        rows = torch.cat([rows, other]).sort().values
    return rows


def _rows_of(value, rows: torch.Tensor):
    """``value`` (a tensor, or a dict or tuple of them, each [M, ...]) at model rows ``rows``."""
    if isinstance(value, torch.Tensor):
        return value[rows]
    if isinstance(value, Mapping):
        return {name: _rows_of(item, rows) for name, item in value.items()}
    return type(value)(_rows_of(item, rows) for item in value)
