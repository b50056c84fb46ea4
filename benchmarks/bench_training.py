"""Training speed: ProbeX epochs from a cached LayerBank vs the official pattern, side by side.

The official ProbeX code trains each layer with a torch Dataset whose ``__getitem__`` opens the
model's safetensors file, reads the layer and the file's metadata, and builds the model's
target from the labels stored there, through a DataLoader with workers, every epoch
(``probex_datasets.py`` and ``train_discriminative_probex.py`` of eliahuhorwitz/ProbeX: batch
size 128 and 4 DataLoader workers by default). probex reads each layer once into a LayerBank
(cached on disk) and trains from memory.

Both runs here train the same ProbeX network with the same optimiser (probex.experts.training.adam),
loss and batch size on the same models of the shipped demo jungle, in one process, one after
the other; only the data path differs. The official-pattern reader is checked to give the
same matrices and targets as the bank. Each tree is measured under three settings:

- ``official``: the official script's defaults, batch 128 and 4 DataLoader workers (whatever
  the number of cores);
- ``per-core``: probex's default batch of 64 and one DataLoader worker per core;
- ``in-process``: batch 128 and no workers: the files are read in the training process, which
  shows how much of the official pattern's epoch is the reading itself and how much is the
  DataLoader starting its workers again every epoch.

    python benchmarks/bench_training.py [--tree all|NAME] [--epochs 50] [--official-epochs 10] [--repeats 3]
                                        [--device cpu|cuda]

Prints the figures and writes bench_training.json beside itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from torch.utils.data import DataLoader, Dataset

from probex import jungle
from probex.experts.nn import ProbeXNetwork
from probex.experts.training import adam, resolve_device, train_network

HERE = Path(__file__).resolve().parent
TREES = ("cnn-supervised", "cnn-attributes", "mixer-supervised", "mini-sd")
SETTINGS = {  # name: (batch size, DataLoader workers of the official pattern)
    "official": (128, 4),
    "per-core": (64, os.cpu_count() or 1),
    "in-process": (128, 0),
}


class OfficialPatternDataset(Dataset):
    """One model per item, as the official code reads it: on every access, open the model's
    safetensors file, read the layer and the metadata, and build the target from its labels."""

    def __init__(self, paths: list[Path], layer: str, classes: list[str], multi_label: bool):
        self.paths, self.layer, self.multi_label = paths, layer, multi_label
        self.class_index = {name: i for i, name in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        with safe_open(str(self.paths[index]), framework="pt") as handle:
            if f"{self.layer}.lora.down.weight" in handle.keys():  # a LoRA layer: merge up @ down (no alpha stored: scale 1)
                down = handle.get_tensor(f"{self.layer}.lora.down.weight").float()
                up = handle.get_tensor(f"{self.layer}.lora.up.weight").float()
                matrix = up @ down
            else:
                matrix = handle.get_tensor(self.layer).float()
                matrix = matrix.reshape(matrix.shape[0], -1)
            metadata = handle.metadata()
        labels = [self.class_index[name] for name in json.loads(metadata["labels"])]
        if self.multi_label:
            target = torch.zeros(len(self.class_index))
            target[labels] = 1.0
        else:
            target = torch.tensor(labels[0])
        return matrix, target


def _network(shape, n_classes: int) -> ProbeXNetwork:
    torch.manual_seed(0)
    return ProbeXNetwork([tuple(shape)], n_classes)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cached(X: torch.Tensor, targets: torch.Tensor, loss, n_classes: int, epochs: int, batch_size: int,
                device: torch.device) -> float:
    """Seconds per epoch of probex's training loop on the bank held in memory (on the device)."""
    warm_up = _network(X.shape[1:], n_classes)  # torch's first steps pay one-off set-up costs: not timed
    warm_up.fit_normalization([X])
    train_network(warm_up, [X], targets, loss, epochs=2, batch_size=batch_size, device=device)
    network = _network(X.shape[1:], n_classes)
    network.fit_normalization([X])
    _synchronize(device)
    started = time.perf_counter()
    train_network(network, [X], targets, loss, epochs=epochs, batch_size=batch_size, device=device)
    _synchronize(device)
    return (time.perf_counter() - started) / epochs


def time_official(dataset: Dataset, X: torch.Tensor, loss_fn, n_classes: int, epochs: int, batch_size: int, workers: int,
                  device: torch.device) -> float:
    """Seconds per epoch of the same training step fed by the official pattern's DataLoader."""
    network = _network(X.shape[1:], n_classes)
    network.fit_normalization([X])
    network.to(device)
    optimizer = adam(network)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    network.train()
    started = None
    for epoch in range(epochs + 1):  # the first epoch warms up (as for the cached run) and is not timed
        if epoch == 1:
            started = time.perf_counter()
        for matrices, target in loader:
            matrices, target = matrices.to(device), target.to(device)
            loss = loss_fn(network([matrices]), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _synchronize(device)
    return (time.perf_counter() - started) / epochs


def measure_tree(tree: str, layer: str | None, epochs: int, official_epochs: int, repeats: int,
                 device: torch.device) -> dict:
    zoo = jungle.load().select(tree=tree)
    layer = layer or jungle.recommended_layers()[tree]
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
    X = bank.X.float()

    dataset = OfficialPatternDataset([record.path for record in records], layer, classes, multi_label)
    for index in (0, len(records) // 2, len(records) - 1):  # the two readers give the same matrices and targets
        matrix, target = dataset[index]
        torch.testing.assert_close(matrix, X[index], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(target, targets[index])

    figures = {"tree": tree, "layer": layer, "shape": list(X.shape[1:]), "models": len(records),
               "bank_build_seconds_once": round(bank_seconds, 2), "settings": {}}
    print(f"{tree} / {layer} {tuple(X.shape[1:])}, {len(records)} training models; bank built once in {bank_seconds:.2f} s")
    for name, (batch_size, workers) in SETTINGS.items():
        runs = []
        for _ in range(repeats):  # the two paths alternate, so a change of load hits both
            cached = time_cached(X, targets, loss, len(classes), epochs, batch_size, device)
            official = time_official(dataset, X, loss, len(classes), official_epochs, batch_size, workers, device)
            runs.append((official / cached, cached, official))
        ratio, cached, official = sorted(runs)[len(runs) // 2]  # the run with the median ratio
        figures["settings"][name] = {
            "batch_size": batch_size,
            "official_workers": workers,
            "cached_seconds_per_epoch": round(cached, 4),
            "cached_epochs_per_second": round(1 / cached, 2),
            "official_seconds_per_epoch": round(official, 3),
            "official_epochs_per_second": round(1 / official, 3),
            "speed_ratio": round(ratio, 1),
            "speed_ratios_of_all_runs": [round(run[0], 1) for run in runs],
        }
        print(f"  {name:9s} batch {batch_size:3d}, {workers} workers: cached {cached * 1e3:7.1f} ms/epoch, "
              f"official {official * 1e3:7.1f} ms/epoch, ratio {ratio:5.1f}x "
              f"(median of {repeats} runs: {', '.join(f'{run[0]:.1f}' for run in runs)})")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default="all", help=f"one of {', '.join(TREES)}, or all")
    parser.add_argument("--layer", help="default: the jungle's recommended layer for the tree")
    parser.add_argument("--epochs", type=int, default=50, help="epochs timed on the cached bank")
    parser.add_argument("--official-epochs", type=int, default=10, help="epochs timed with the official pattern")
    parser.add_argument("--repeats", type=int, default=3, help="runs of both paths per setting; the median ratio is reported")
    parser.add_argument("--out", type=Path, default=HERE / "bench_training.json", help="the JSON written (default: beside this script)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto: where both paths train")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the training steps of both runs")
    args = parser.parse_args()
    if args.layer and args.tree == "all":
        parser.error("--layer needs one --tree")

    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    # The official settings start 4 workers whatever the cores; torch warns about that on small machines.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    machine = {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "torch_threads": args.threads, "device": str(device), "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    results = {}
    for tree in TREES if args.tree == "all" else (args.tree,):
        results[tree] = measure_tree(tree, args.layer, args.epochs, args.official_epochs, args.repeats, device)
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out
    out.write_text(json.dumps({"machine": machine, "trees": results}, indent=2) + "\n")
    print(f"load average before/after: {machine['load_average_before'][0]} / {machine['load_average_after'][0]}; wrote {out.name}")


if __name__ == "__main__":
    main()
