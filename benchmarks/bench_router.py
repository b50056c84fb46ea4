"""Router benchmark: cluster N synthetic models of a 768x768 layer in 3 trees, then route new ones.

    python benchmarks/bench_router.py                  # 1k, 3k and 10k models
    python benchmarks/bench_router.py --sizes 1000     # just one size

The population never sits in RAM: it is written, chunk by chunk (one seed per chunk, so the
data are deterministic), to a float16 memory-mapped file in a temporary folder, and the router
reads it through ``torch.from_numpy(numpy.memmap)``. 10,000 models are 11.8 GB on disk.

Each model is its tree's root (std 0.02, like a fresh ViT layer) plus a rank-4 fine-tuning
update (std 0.004 per value) plus noise (std 0.001). Trees are drawn with probabilities
0.5 / 0.3 / 0.2. Held out: 100 new models of each tree and 100 of a fourth root never seen.

What is timed, separately: writing the data (generation), ``TreeRouter().fit`` (clustering:
one read for the coordinate subset and the cell sums, linkage, exact tree means, a second read
for the exact distances and the confirmation, radii), and ``route`` of the 400 held-out
models. Peak memory is sampled from /proc/self/status: anonymous memory (RssAnon, what the
process really holds) and file-backed pages of the memory map (RssFile, page cache the kernel
can drop). The data file was just written, so part of it may still be in the page cache (how
much memory the kernel reports as cached is recorded before each fit): a cold cache adds disk
reads. The machine is shared, so the 1-minute load average is recorded before and after each
phase, and the router's own log of its phases is kept. Results go to bench_router.json beside
this script, rewritten after each size.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from probex.trees.router import TreeRouter

SHAPE = (768, 768)
TREE_PROBABILITIES = (0.5, 0.3, 0.2)
ROOT_STD, UPDATE_STD, NOISE_STD, RANK = 0.02, 0.004, 0.001, 4
CHUNK = 64


def roots(count: int) -> torch.Tensor:
    return torch.randn(count, *SHAPE, generator=torch.Generator().manual_seed(2024)) * ROOT_STD


def write_population(path: Path, n: int, trees: np.ndarray, root_weights: torch.Tensor, seed: int) -> np.memmap:
    """Write n models of the given trees to a float16 memmap, one deterministic chunk at a time."""
    data = np.memmap(path, dtype=np.float16, mode="w+", shape=(n, *SHAPE))
    for start in range(0, n, CHUNK):
        stop = min(start + CHUNK, n)
        generator = torch.Generator().manual_seed(seed * 1_000_003 + start)
        count = stop - start
        A = torch.randn(count, SHAPE[0], RANK, generator=generator)
        B = torch.randn(count, RANK, SHAPE[1], generator=generator)
        chunk = root_weights[torch.from_numpy(trees[start:stop])]
        chunk.baddbmm_(A, B, alpha=UPDATE_STD / RANK**0.5)
        chunk.add_(torch.randn(count, *SHAPE, generator=generator), alpha=NOISE_STD)
        data[start:stop] = chunk.half().numpy()
    data.flush()
    del data
    return np.memmap(path, dtype=np.float16, mode="r", shape=(n, *SHAPE))


class MemoryPeak:
    """Samples RssAnon / RssFile of this process every 0.1 s while running."""

    def __init__(self):
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
            self.anon = max(self.anon, int(fields["RssAnon"].split()[0]) * 1024)
            self.file = max(self.file, int(fields["RssFile"].split()[0]) * 1024)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RouterLog(logging.Handler):
    """Keeps the messages of the router's loggers (its phase timings)."""

    def __init__(self):
        super().__init__(level=logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("probex.trees.clustering", "probex.trees.router")):
            self.messages.append(record.getMessage())


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def meminfo_gb(*fields: str) -> dict:
    values = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    return {field: round(int(values[field].split()[0]) * 1024 / 1e9, 1) for field in fields}


def run(n: int, workdir: Path) -> dict:
    rng = np.random.default_rng(n)
    root_weights = roots(4)  # the 4th root is the tree never seen in fit
    trees = rng.choice(3, size=n, p=TREE_PROBABILITIES)
    held_out_trees = np.repeat(np.arange(4), 100)
    router_log = RouterLog()
    logging.getLogger("probex").addHandler(router_log)
    load = {"generation_start": load_1min()}
    with MemoryPeak() as memory:
        started = time.perf_counter()
        population = write_population(workdir / f"population_{n}.f16", n, trees, root_weights, seed=1)
        held_out = write_population(workdir / f"held_out_{n}.f16", len(held_out_trees), held_out_trees,
                                    root_weights, seed=2)
        generation_s = time.perf_counter() - started

        load["fit_start"] = load_1min()
        memory_before_fit = meminfo_gb("MemAvailable", "Cached")
        started = time.perf_counter()
        router = TreeRouter().fit(population)
        fit_s = time.perf_counter() - started
        load["fit_end"] = load_1min()

        started = time.perf_counter()
        routed = router.route(held_out)
        route_s = time.perf_counter() - started
        load["route_end"] = load_1min()
    logging.getLogger("probex").removeHandler(router_log)

    # a found tree is named by the true tree of most of its members
    truth = {k: int(np.bincount(trees[router.labels_ == k]).argmax()) for k in range(router.n_trees_)}
    index = {name: k for k, name in enumerate(router.tree_names_)}
    known = held_out_trees < 3
    predicted = np.array([-1 if name is None else truth[index[name]] for name in routed])
    result = {
        "models": n,
        "layer": list(SHAPE),
        "data_gb": round(population.nbytes / 1e9, 2),
        "generation_s": round(generation_s, 1),
        "fit_s": round(fit_s, 1),
        "route_400_s": round(route_s, 1),
        "n_trees_found": router.n_trees_,
        "strategy": router.architectures_[0].strategy,
        "fit_adjusted_rand_index": round(float(adjusted_rand_score(trees, router.labels_)), 4),
        "held_out_routing_accuracy": float(np.mean(predicted[known] == held_out_trees[known])),
        "unseen_tree_reported_unknown": float(np.mean(predicted[~known] == -1)),
        "peak_rss_anon_gb": round(memory.anon / 1e9, 2),
        "peak_rss_file_gb": round(memory.file / 1e9, 2),
        "load_average_1min": load,
        "memory_before_fit_gb": memory_before_fit,
        "router_log": router_log.messages,
    }
    del population, held_out
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary memmaps go")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="    %(name)s: %(message)s")
    logging.getLogger("probex").setLevel(logging.INFO)
    out = Path(__file__).with_suffix(".json")
    report = {
        "conditions": {
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "memory_gb": meminfo_gb("MemTotal", "MemAvailable"),
            "load_average_1min_start": load_1min(),
            "note": "2-core machine shared with other developers' processes; data file freshly written "
                    "(partly in page cache); the router streams on one torch thread "
                    "(probex.trees.distances.STREAM_THREADS)",
        },
        "runs": [],
    }
    for n in args.sizes:
        workdir = Path(tempfile.mkdtemp(prefix="bench_router_", dir=args.workdir))
        try:
            result = run(n, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        report["runs"].append(result)
        print(f"{n:>6} models: generation {result['generation_s']:6.1f} s | fit {result['fit_s']:6.1f} s | "
              f"route 400 {result['route_400_s']:5.1f} s | trees {result['n_trees_found']} "
              f"({result['strategy']}) | ARI {result['fit_adjusted_rand_index']:.3f} | "
              f"held-out accuracy {result['held_out_routing_accuracy']:.3f} | "
              f"unseen->unknown {result['unseen_tree_reported_unknown']:.3f} | "
              f"peak anon {result['peak_rss_anon_gb']} GB, file {result['peak_rss_file_gb']} GB", flush=True)
        report["conditions"]["load_average_1min_end"] = load_1min()
        out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
