"""The training loop shared by every torch expert.

Adam (lr 1e-3, weight decay 1e-5 by default), mini-batches, the best epoch kept by a
validation score, optional early stopping, a seed that makes runs repeatable, CUDA when
present, and a progress callback ``progress(done, total, log)`` called after each epoch with
an :class:`EpochLog` (the CLI turns it into tqdm, the app into st.progress and live curves).

Inputs are MatrixStacks (:func:`probex.experts.inputs.as_layers`; tensors are wrapped). When the training and
validation sets fit the memory budget in float32 (:func:`probex.zoo.stack.memory_budget`,
2 GiB unless ``$PROBEX_MEMORY_BUDGET`` says otherwise) they are copied to the device once;
otherwise every batch is read from the (memory-mapped) bank and converted on the fly.
"""

from __future__ import annotations

import copy
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn
from probex.errors import ProbeXError

from probex.zoo.stack import MatrixStack, as_stack, memory_budget

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, object], None]

#: float32 bytes of one prediction batch's merged matrices at most (batches shrink for large layers).
PREDICT_BATCH_BYTES = 256 * 2**20


THREADS_ENV = "PROBEX_THREADS"


def set_threads(threads: Optional[int] = None) -> int:
    """Set torch's CPU threads for training and prediction; returns the number in effect.

    ``threads`` None reads ``$PROBEX_THREADS``; when neither is given, :func:`default_threads`
    chooses from the cores and the load. The CLI and the app call this at start.
    """
    if threads is None:
        text = os.environ.get(THREADS_ENV, "").strip()
        if not text:
            threads = default_threads()
            torch.set_num_threads(threads)
            logger.info("torch threads: %d (of %d cores; $%s or --threads overrides)", threads, os.cpu_count() or 1, THREADS_ENV)
            return threads
        try:
            threads = int(text)
        except ValueError:
            raise ProbeXError(f"${THREADS_ENV} must be a whole number of threads; got {text!r}") from None
    if threads < 1:
        raise ProbeXError(f"threads must be >= 1; got {threads}")
    torch.set_num_threads(threads)
    return threads


def default_threads() -> int:
    """The threads to use when nobody chose: the cores other processes leave idle, at least one.

    torch's own default, one thread per core, falls off a cliff when another process keeps a
    core busy: its threads wait on each other at every operation. On a 2-core machine with one
    other busy process, training a demo-jungle expert took 10 to 60 times longer with two
    threads than with one. Busy cores are the larger of the 1-minute load average and the
    processes running right now (Linux ``/proc/loadavg``; the load average alone lags a
    process that has just started), this process not counted.
    """
    cores = os.cpu_count() or 1
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def busy_cores() -> float:
    """How many cores other processes keep busy (see :func:`default_threads`)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # not available on this platform
        load = 0.0
    try:
        with open("/proc/loadavg", encoding="ascii") as handle:
            running = int(handle.read().split()[3].split("/")[0]) - 1  # this process is running while it reads
    except (OSError, ValueError, IndexError):
        running = 0
    return max(load, float(running))


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The device to train on: "auto" (or None) picks CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ProbeXError(f"device {device!r} asked for, but CUDA is not available here; use device='auto' or 'cpu'")
    return resolved


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global generator seeded, restoring its state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@dataclass
class EpochLog:
    """What one epoch measured; what the progress callback receives."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: Optional[float] = None
    val_score: Optional[float] = None
    best_epoch: int = 0

    def __str__(self) -> str:
        text = f"epoch {self.epoch}/{self.epochs} loss {self.train_loss:.4f}"
        if self.val_score is not None:
            text += f" val {self.val_score:.4f} (best epoch {self.best_epoch})"
        return text


@dataclass
class TrainingResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    best_score: Optional[float] = None


class _Batches:
    """Mini-batches of several aligned inputs, on the device, as float32 (tensors or LoraFactors).

    ``resident``: the inputs were copied to the device once (they fit the memory budget);
    otherwise each batch is read from the stacks, rows in storage order.
    """

    def __init__(self, layers: Sequence[MatrixStack], targets: torch.Tensor, device: torch.device, resident: bool):
        self.resident = resident
        self.stacks = list(layers)
        self.layers = [stack.take(device=device) for stack in layers] if resident else None
        self.targets = targets.to(device)
        self.device = device
        self.n = targets.shape[0]

    def take(self, index: torch.Tensor) -> tuple[list, torch.Tensor]:
        if self.resident:
            index = index.to(self.device)
            return [layer[index] for layer in self.layers], self.targets[index]
        index = index.sort().values  # reads in file order; a batch's loss does not depend on its order
        rows = index.numpy()
        return [stack.take(rows, self.device) for stack in self.stacks], self.targets[index.to(self.device)]

    def in_order(self, batch_size: int) -> Iterator[tuple[list, torch.Tensor]]:
        for start in range(0, self.n, batch_size):
            yield self.take(torch.arange(start, min(start + batch_size, self.n)))


def fits_in_memory(*stacks: Sequence[MatrixStack]) -> bool:
    """Whether these inputs, in float32, fit the memory budget (then they are copied to the device once)."""
    return sum(stack.float32_bytes() for group in stacks for stack in group) <= memory_budget()


def _eval_batch(stacks: Sequence[MatrixStack], batch_size: int) -> int:
    """``batch_size``, or fewer models when a batch of merged float32 matrices would pass PREDICT_BATCH_BYTES."""
    per_model = sum(4 * stack.shape[1] * stack.shape[2] for stack in stacks)
    return max(1, min(batch_size, int(PREDICT_BATCH_BYTES // max(per_model, 1))))


def adam(network: nn.Module, lr: float = 1e-3, weight_decay: float = 1e-5) -> torch.optim.Adam:
    """The experts' optimiser: Adam, fused into one kernel per step on the CPU and CUDA.

    The fused update follows the same rule as torch's default Adam (equal up to float
    rounding); on the demo jungle's 12x48 and 64x64 layers it makes a CPU epoch about 1.2x
    faster.
    """
    parameters = [p for p in network.parameters() if p.requires_grad]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay, fused=fused or None)


@torch.no_grad()
def predict_in_batches(network: nn.Module, layers: Sequence[MatrixStack | torch.Tensor], device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """network(layers) for all models, batch by batch (smaller for large layers), on the CPU at the end."""
    network.eval()
    outputs = []
    layers = [as_stack(layer) for layer in layers]
    n = len(layers[0])
    batch_size = _eval_batch(layers, batch_size)
    for start in range(0, n, batch_size):
        batch = [stack.take(slice(start, start + batch_size), device) for stack in layers]
        outputs.append(network(batch).float().cpu())
    return torch.cat(outputs)


def train_network(
    network: nn.Module,
    layers: Sequence[MatrixStack | torch.Tensor],
    targets: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    val: Optional[tuple[Sequence[MatrixStack | torch.Tensor], torch.Tensor]] = None,
    score_fn: Optional[Callable[[torch.Tensor, torch.Tensor], float]] = None,
    epochs: int = 500,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 64,
    patience: Optional[int] = None,
    device: torch.device = torch.device("cpu"),
    seed: int = 0,
    progress: Optional[ProgressCallback] = None,
) -> TrainingResult:
    """Train ``network`` in place; with a validation set it ends holding its best epoch's weights.

    The best epoch has the highest validation score (``score_fn(outputs, targets)``; ties go to
    the lower validation loss). Without validation data the last epoch is kept. With
    ``patience`` set, training stops after that many epochs without a better validation score.
    """
    if epochs < 1:
        raise ProbeXError(f"epochs must be >= 1; got {epochs}")
    network.to(device)
    optimizer = adam(network, lr=lr, weight_decay=weight_decay)
    layers = [as_stack(layer) for layer in layers]
    if val is not None:
        val = ([as_stack(layer) for layer in val[0]], val[1])
    resident = fits_in_memory(layers, val[0] if val is not None else [])
    if not resident:
        logger.info("training inputs exceed the memory budget (%.1f GB); streaming batches from the bank",
                    memory_budget() / 1e9)
    batches = _Batches(layers, targets, device, resident)
    val_batches = _Batches(val[0], val[1], device, resident) if val is not None else None
    order = torch.Generator().manual_seed(seed)
    result = TrainingResult()
    best_key: Optional[tuple[float, float]] = None
    best_state = None
    since_best = 0
    for epoch in range(1, epochs + 1):
        network.train()
        total, seen = 0.0, 0
        for index in torch.randperm(batches.n, generator=order).split(batch_size):
            inputs, target = batches.take(index)
            loss = loss_fn(network(inputs), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            seen += len(index)
        log = EpochLog(epoch=epoch, epochs=epochs, train_loss=total / seen, best_epoch=epoch)
        if val_batches is not None:
            network.eval()
            with torch.no_grad():
                outputs = torch.cat([network(inputs) for inputs, _ in val_batches.in_order(_eval_batch(val_batches.stacks, 512))])
            log.val_loss = float(loss_fn(outputs, val_batches.targets))
            log.val_score = float(score_fn(outputs, val_batches.targets)) if score_fn else -log.val_loss
            key = (log.val_score, -log.val_loss)
            if best_key is None or key > best_key:
                best_key, result.best_epoch, result.best_score = key, epoch, log.val_score
                best_state = copy.deepcopy(network.state_dict())
                since_best = 0
            else:
                since_best += 1
            log.best_epoch = result.best_epoch
        else:
            result.best_epoch = epoch
        result.history.append(log)
        if progress is not None:
            progress(epoch, epochs, log)
        if patience is not None and val_batches is not None and since_best >= patience:
            logger.info("early stop at epoch %d (best %d)", epoch, result.best_epoch)
            break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return result
