"""Training speed: ProbeX epochs from a cached LayerBank vs the official pattern, side by side.

The official ProbeX code trains each layer with a torch Dataset whose ``__getitem__`` opens the
model's safetensors file and reads the layer, through a DataLoader with workers, every epoch.
probex reads each layer once into a LayerBank (cached on disk) and trains from memory.

Both runs here train the same ProbeX network (same shapes, loss, optimiser, batch size) on the
same models of the shipped demo jungle, in one process, one after the other; only the data
path differs. The official-pattern reader is checked to give the same matrices as the bank.

    python benchmarks/bench_training.py [--tree mini-sd] [--epochs 20] [--official-epochs 3]

Prints the figures and writes bench_training.json beside itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from probex import jungle
from probex.nn import ProbeXNetwork
from probex.training import train_network

HERE = Path(__file__).resolve().parent


class OfficialPatternDataset(Dataset):
    """One model per item: open its safetensors file and read the layer, on every access."""

    def __init__(self, paths: list[Path], layer: str, targets: torch.Tensor):
        self.paths, self.layer, self.targets = paths, layer, targets

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with safe_open(str(self.paths[index]), framework="pt") as handle:
            keys = set(handle.keys())
            if f"{self.layer}.lora.down.weight" in keys:  # a LoRA layer: merge up @ down (no alpha stored: scale 1)
                down = handle.get_tensor(f"{self.layer}.lora.down.weight").float()
                up = handle.get_tensor(f"{self.layer}.lora.up.weight").float()
                matrix = up @ down
            else:
                matrix = handle.get_tensor(self.layer).float()
                matrix = matrix.reshape(matrix.shape[0], -1)
        return matrix, self.targets[index]


def _network(shape, n_classes: int) -> ProbeXNetwork:
    torch.manual_seed(0)
    return ProbeXNetwork([tuple(shape)], n_classes)


def time_cached(X: torch.Tensor, targets: torch.Tensor, loss, n_classes: int, epochs: int, batch_size: int) -> float:
    warm_up = _network(X.shape[1:], n_classes)  # torch's first steps pay one-off set-up costs: not timed
    warm_up.fit_normalization([X])
    train_network(warm_up, [X], targets, loss, epochs=2, batch_size=batch_size)
    network = _network(X.shape[1:], n_classes)
    network.fit_normalization([X])
    started = time.perf_counter()
    train_network(network, [X], targets, loss, epochs=epochs, batch_size=batch_size)
    return (time.perf_counter() - started) / epochs


def time_official(dataset: Dataset, shape, loss_fn, n_classes: int, epochs: int, batch_size: int, workers: int) -> float:
    network = _network(shape, n_classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3, weight_decay=1e-5)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    network.train()
    started = None
    for epoch in range(epochs + 1):  # the first epoch warms up (as for the cached run) and is not timed
        if epoch == 1:
            started = time.perf_counter()
        for matrices, target in loader:
            loss = loss_fn(network([matrices]), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="mini-sd")
    parser.add_argument("--layer", help="default: the jungle's recommended layer for the tree")
    parser.add_argument("--epochs", type=int, default=20, help="epochs timed on the cached bank")
    parser.add_argument("--official-epochs", type=int, default=3, help="epochs timed with the official pattern")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the training steps of both runs")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the official pattern")
    args = parser.parse_args()

    zoo = jungle.load().select(tree=args.tree)
    layer = args.layer or jungle.recommended_layers()[args.tree]
    records = [record for record in zoo.records if record.split == "train"]
    classes = sorted({label for record in records for label in record.labels})
    multi_label = any(len(record.labels) > 1 for record in records)
    if multi_label:  # training-class prediction: multi-hot targets, BCE (as ProbeXClassifier trains)
        targets = torch.zeros(len(records), len(classes))
        for row, record in enumerate(records):
            targets[row, [classes.index(label) for label in record.labels]] = 1.0
        loss = torch.nn.functional.binary_cross_entropy_with_logits
    else:  # one concept per model
        targets = torch.tensor([classes.index(record.labels[0]) for record in records])
        loss = torch.nn.functional.cross_entropy

    started = time.perf_counter()
    bank = zoo.bank(layer, split="train", cache=False)
    bank_seconds = time.perf_counter() - started
    assert [r.id for r in bank.records] == [r.id for r in records], "bank and records disagree on order"

    dataset = OfficialPatternDataset([record.path for record in records], layer, targets)
    for index in (0, len(records) // 2, len(records) - 1):  # the two readers give the same matrices
        torch.testing.assert_close(dataset[index][0], bank.X[index].float(), rtol=1e-3, atol=1e-5)

    torch.set_num_threads(args.threads)
    cached = time_cached(bank.X.float(), targets, loss, len(classes), args.epochs, args.batch_size)
    official = time_official(dataset, bank.X.shape[1:], loss, len(classes), args.official_epochs, args.batch_size, args.workers)
    figures = {
        "tree": args.tree,
        "layer": layer,
        "shape": list(bank.X.shape[1:]),
        "models": len(records),
        "batch_size": args.batch_size,
        "bank_build_seconds_once": round(bank_seconds, 2),
        "cached_seconds_per_epoch": round(cached, 4),
        "cached_epochs_per_second": round(1 / cached, 2),
        "official_seconds_per_epoch": round(official, 3),
        "official_epochs_per_second": round(1 / official, 3),
        "official_workers": args.workers,
        "torch_threads": args.threads,
        "speed_ratio": round(official / cached, 1),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    print(f"{args.tree} / {layer} {tuple(bank.X.shape[1:])}, {len(records)} training models, batch {args.batch_size}")
    print(f"  bank built once:        {bank_seconds:8.2f} s (then cached on disk)")
    print(f"  cached LayerBank:       {cached:8.4f} s/epoch  ({1 / cached:7.2f} epochs/s)")
    print(f"  official pattern:       {official:8.3f} s/epoch  ({1 / official:7.3f} epochs/s, {args.workers} workers)")
    print(f"  ratio:                  {official / cached:8.1f}x")
    out = HERE / "bench_training.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[args.tree] = figures
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
