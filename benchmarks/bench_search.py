"""Prompt search benchmark: how long a prompt takes once a ModelIndex is built, beside building it.

    python benchmarks/bench_search.py              # the shipped jungle's aligned tree, 20 prompts
    python benchmarks/bench_search.py --repeats 50

The index of the shipped demo jungle's aligned tree (its shipped expert) is built once (every
model's layers read and encoded); then the same prompt is searched ``repeats`` times (the text
encoder is loaded by a first, untimed search) and one model's best labels are read. Printed side
by side: build seconds, milliseconds per search and per ``top_labels``, and how many searches
cost one build. The machine may be shared: the 1-minute load average is recorded before and
after. Results go to bench_search.json beside this script. (This figure was a timed test,
``search < 0.5 s``, until timing moved out of the test suite.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from probex import jungle, load_expert
from probex.language.search import ModelIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="searches timed (default 20)")
    parser.add_argument("--prompt", default="a red star")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    zoo = jungle.load()
    (tree,) = zoo.trees_with_role("aligned")
    expert = load_expert(jungle.expert_dirs()[tree])

    started = time.perf_counter()
    index = ModelIndex.build(expert, zoo)
    build_seconds = time.perf_counter() - started

    index.search(args.prompt)  # loads the text encoder
    started = time.perf_counter()
    for _ in range(args.repeats):
        index.search(args.prompt, k=10)
    search_seconds = (time.perf_counter() - started) / args.repeats

    model = index.records[0].id
    started = time.perf_counter()
    for _ in range(args.repeats):
        index.top_labels(model, k=5)
    top_labels_seconds = (time.perf_counter() - started) / args.repeats

    result = {
        "tree": tree, "models": len(index), "layers": expert.layers_, "prompt": args.prompt, "repeats": args.repeats,
        "build_seconds": round(build_seconds, 3), "search_ms": round(search_seconds * 1000, 2),
        "top_labels_ms": round(top_labels_seconds * 1000, 2),
        "searches_per_build": round(build_seconds / search_seconds, 1),
        "load_average": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(), "python": platform.python_version(),
    }
    print(f"{tree}: {len(index)} models; build {build_seconds:.2f} s; search {search_seconds * 1000:.1f} ms; "
          f"top_labels {top_labels_seconds * 1000:.1f} ms; one build costs {result['searches_per_build']:.0f} searches "
          f"(load average {load_before:.1f} -> {result['load_average'][1]:.1f})")
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
