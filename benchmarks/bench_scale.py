"""Scale: wall time and peak memory of probex on Model-J-sized zoos, step by step, each in a fresh process.

Two commands::

    python benchmarks/bench_scale.py generate sd  --models 5000 --out /data/sd5k   [--modules attn2] [--classes 200]
    python benchmarks/bench_scale.py generate vit --models 1000 --out /data/vit1k
    python benchmarks/bench_scale.py measure /data/sd5k  --label after [--steps open,bank,route,align,search,app]
    python benchmarks/bench_scale.py measure /data/vit1k --label after [--steps open,route,classify]

``generate`` writes a zoo in the exact Model-J layout (see scale_zoos.py: SD LoRA files with
real diffusers names and shapes, or ViT-B-shaped float16 models in the Hugging Face cache
layout) and a ``scale_zoo.json`` beside it that says what it holds.

``measure`` runs each step as its own process through the probex CLI (or streamlit's AppTest
for the app), with an empty probex cache, so every step is measured cold and end to end:

- ``open``: ``probex zoo info`` (every header read, the catalog listed);
- ``bank``: ``probex zoo bank`` of the layer (and the bank's size on disk);
- ``route``: ``probex route --layer`` (trees found, routing accuracy);
- ``align`` (SD): ``probex align --layers`` with its defaults (early stopping) and every figure it
  prints, the expert saved for ``search``;
- ``classify`` (ViT): ``probex sweep --task classes --layer`` (train / val / test, early stopping);
- ``search`` (SD): ``probex search`` with a held-out class's prompt, from the saved expert;
- ``app``: each page of the Explorer in a fresh AppTest process (cold: the page's own seconds
  after the Home page), then one process that opens every page in turn (the server's peak RSS).

Peak RSS is the process's own high-water mark (``getrusage(RUSAGE_CHILDREN)`` of a small
wrapper process around each step), beside the step's wall and CPU seconds and the load
average at its end (on a shared machine the CPU seconds of a one-thread run are what its wall
time would be alone); a watchdog samples the whole process group's RSS and kills
the step above ``--limit-gb`` (default 12) or ``--timeout``: one big measurement at a time,
never beside a test suite. Results go into ``bench_scale.json`` beside this script, under the
label (``before`` / ``after``) and the zoo (``sd-5000``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = REPO / "explorer" / "app.py"
PAGES = ["home", "trees", "experts", "atlas", "search", "inspect"]
SUMMARY = "scale_zoo.json"
GB = 1e9

# ---------------------------------------------------------------------------------------------
# generate


def generate(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    import scale_zoos

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} models", end="", flush=True)

    if args.kind == "sd":
        subset = args.subset or ("SD_1k" if args.classes >= 1000 else "SD_200")
        held_out = args.held_out if args.held_out is not None else max(2, round(args.classes * 0.15))
        summary = scale_zoos.write_sd_zoo(out, args.models, n_classes=args.classes, n_held_out=held_out,
                                          modules=args.modules, images_per_model=args.images, seed=args.seed,
                                          subset=subset, progress=progress)
        layer = scale_zoos.PAPER_LAYER if scale_zoos.PAPER_LAYER in summary.layers else summary.layers[0]
    else:
        summary = scale_zoos.write_vit_zoo(out / "SupViT", args.models, seed=args.seed, progress=progress)
        layer = scale_zoos.VIT_LAYERS[0]
    print()
    info = {"kind": args.kind, "models": args.models, "layer": layer, "modules": args.modules if args.kind == "sd" else None,
            "held_out_names": summary.held_out, **summary.to_json()}
    (out / SUMMARY).write_text(json.dumps(info, indent=2) + "\n")
    print(f"wrote {args.models} models ({info['gigabytes']} GB) to {summary.root} in {summary.seconds:.0f} s; "
          f"splits {summary.splits}")


# ---------------------------------------------------------------------------------------------
# the wrapper around one step: watchdog, peak RSS


def _group_rss(group: int) -> int:
    """Resident bytes of every process in process group ``group``."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != group:  # fields after the name: state, ppid, pgrp
                continue
            with open(f"/proc/{entry}/statm") as handle:
                total += int(handle.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def wrap(args: argparse.Namespace) -> None:
    """Run the command in its own process group; kill it above the memory limit or the time limit."""
    limit, started, peak, killed = args.limit_gb * GB, time.perf_counter(), 0, None
    with open(args.log, "w") as log:
        child = subprocess.Popen(args.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while child.poll() is None:
            rss = _group_rss(child.pid)
            peak = max(peak, rss)
            elapsed = time.perf_counter() - started
            if killed is None and (rss > limit or elapsed > args.timeout):
                killed = f"RSS {rss / GB:.1f} GB above {args.limit_gb:g} GB" if rss > limit else f"over {args.timeout:.0f} s"
                killed += f" after {elapsed:.0f} s"
                os.killpg(child.pid, signal.SIGKILL)
            time.sleep(0.2)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(args.result).write_text(json.dumps({
        "returncode": child.returncode, "seconds": round(seconds, 1), "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 2),
        "sampled_group_peak_gb": round(peak / GB, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_1m": round(os.getloadavg()[0], 2), "killed": killed}))


def run_step(name: str, command: list[str], work: Path, env: dict, limit_gb: float, timeout: float) -> dict:
    """Measure one step (a fresh wrapper process around a fresh process); its output is kept in work/<name>.log."""
    log, result = work / f"{name}.log", work / f"{name}.result.json"
    wrapper = [sys.executable, str(Path(__file__).resolve()), "_wrap", "--limit-gb", str(limit_gb), "--timeout", str(timeout),
               "--log", str(log), "--result", str(result), "--", *command]
    print(f"[{name}] {' '.join(command)}", flush=True)
    subprocess.run(wrapper, env=env, check=True)
    figures = json.loads(result.read_text())
    output = log.read_text(errors="replace")
    figures["status"] = "ok" if figures["returncode"] == 0 and not figures["killed"] else figures["killed"] or "failed"
    if figures["status"] != "ok":
        figures["error"] = _last_error(output)
    figures["output_tail"] = _clean(output)[-25:]
    print(f"[{name}] {figures['status']}: {figures['seconds']} s, peak RSS {figures['peak_rss_gb']} GB", flush=True)
    return figures


def _clean(output: str) -> list[str]:
    """The output's lines without progress bars (tqdm redraws with carriage returns)."""
    lines = [line.rsplit("\r", 1)[-1] for line in output.splitlines()]
    return [line for line in lines if line.strip() and "it/s]" not in line and "s/it]" not in line]


def _last_error(output: str) -> str:
    lines = _clean(output)
    return lines[-1][:300] if lines else "(no output)"


# ---------------------------------------------------------------------------------------------
# figures printed by the CLI

_FIGURE = re.compile(r"^\s+(?P<name>[A-Za-z].*?)\s+(?P<value>-?\d+\.\d+|n/a)\s+(?P<chance>\d+\.\d+)(?:\s+\(.*\))?\s*$")
_SWEEP_BEST = re.compile(r"^\*\s+(?P<layer>\S+)\s+(?P<shape>\d+x\d+)\s+(?P<val>\d+\.\d+)\s+(?P<test>\d+\.\d+|-)")


def align_figures(lines: list[str]) -> dict:
    """name -> {"value", "chance"} of every figure line ``name value chance`` that ``probex align`` prints."""
    figures = {}
    for line in lines:
        match = _FIGURE.match(line)
        if match:
            value = match.group("value")
            figures[match.group("name").strip()] = {"value": None if value == "n/a" else float(value),
                                                    "chance": float(match.group("chance"))}
    return figures


def sweep_figures(lines: list[str]) -> dict:
    """The best layer's row of ``probex sweep`` (mean binary accuracy: chance 0.5 with half the classes chosen)."""
    for line in lines:
        match = _SWEEP_BEST.match(line)
        if match:
            test = match.group("test")
            return {"validation": {"value": float(match.group("val")), "chance": 0.5},
                    "test": {"value": None if test == "-" else float(test), "chance": 0.5}}
    return {}


def route_figures(lines: list[str]) -> dict:
    figures = {}
    for line in lines:
        if line.startswith("trees found:"):
            figures["trees_found"] = int(line.split(":")[1])
        elif line.startswith("routing accuracy") and ":" in line:
            tail = line.rsplit(":", 1)[1].strip()
            figures["routing_accuracy"] = float(tail) if re.fullmatch(r"\d+\.\d+", tail) else tail
    return figures


# ---------------------------------------------------------------------------------------------
# the app: one AppTest process


def app_pages(args: argparse.Namespace) -> None:
    """Open the Explorer on the zoo (Home first), then each page asked for; write seconds and errors as JSON."""
    from streamlit.testing.v1 import AppTest

    started = time.perf_counter()
    app = AppTest.from_file(args.app, default_timeout=args.timeout)
    app.session_state["population_path"] = args.zoo
    app.run()
    rows = {"home": _page_row(app, time.perf_counter() - started)}
    for page in args.pages:
        if page == "home":
            continue
        started = time.perf_counter()
        app.switch_page(f"views/{page}.py").run()
        rows[page] = _page_row(app, time.perf_counter() - started)
    Path(args.result).write_text(json.dumps(rows))


def _page_row(app, seconds: float) -> dict:
    return {"seconds": round(seconds, 1), "exceptions": [str(e.value)[:300] for e in app.exception],
            "errors": [str(e.value)[:300] for e in app.error], "title": app.title[0].value if app.title else None}


# ---------------------------------------------------------------------------------------------
# measure


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "probex.cli", *arguments]


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else 0


def measure(args: argparse.Namespace) -> None:
    info = json.loads((Path(args.zoo) / SUMMARY).read_text())
    root, layer, kind = info["root"], args.layer or info["layer"], info["kind"]
    key = f"{kind}-{info['models']}"
    default_steps = "open,bank,route,align,search,app" if kind == "sd" else "open,route,classify"
    steps = (args.steps or default_steps).split(",")
    work = Path(args.work or f"/tmp/probex-bench-scale-{key}")
    work.mkdir(parents=True, exist_ok=True)
    expert = work / "expert"
    code = Path(args.code).resolve() if args.code else REPO
    results: dict[str, dict] = {"code": {"folder": str(code), "commit": _commit(code)}}

    def fresh_env(step: str) -> dict:
        cache = work / f"cache-{step}"
        shutil.rmtree(cache, ignore_errors=True)
        return {**os.environ, "PROBEX_CACHE": str(cache), "PYTHONPATH": str(code)}

    def done(step: str) -> None:
        shutil.rmtree(work / f"cache-{step}", ignore_errors=True)  # cold caches: each step builds its own
        _save(args.label, key, info, results, args.out)

    for step in steps:
        env = fresh_env(step)
        run = lambda command, name=step: run_step(name, command, work, env, args.limit_gb, args.timeout)  # noqa: E731
        if step == "open":
            results[step] = run(_cli("zoo", "info", root, "--layers", "0"))
        elif step == "bank":
            results[step] = run(_cli("zoo", "bank", root, layer))
            results[step]["bank_on_disk_gb"] = round(_folder_bytes(work / "cache-bank" / "banks") / GB, 3)
        elif step == "route":
            results[step] = run(_cli("route", root, "--layer", layer))
            results[step]["figures"] = route_figures(results[step]["output_tail"])
        elif step == "align":
            shutil.rmtree(expert, ignore_errors=True)
            extra = ["--epochs", str(args.epochs)] if args.epochs else []
            results[step] = run(_cli("align", root, "--layers", layer, "--out", str(expert), *extra))
            results[step]["epochs"] = args.epochs or "the CLI's default (100, patience 20)"
            results[step]["figures"] = align_figures(results[step]["output_tail"])
            results[step]["cache_on_disk_gb"] = round(_folder_bytes(work / "cache-align") / GB, 3)
        elif step == "classify":
            extra = ["--epochs", str(args.epochs)] if args.epochs else []
            results[step] = run(_cli("sweep", root, "--task", "classes", "--layer", layer,
                                     "--results", str(work / "sweep.jsonl"), *extra))
            results[step]["epochs"] = args.epochs or "the CLI's default (100, patience 20)"
            (work / "sweep.jsonl").unlink(missing_ok=True)
            results[step]["figures"] = sweep_figures(results[step]["output_tail"])
        elif step == "search":
            if not (expert / "config.json").is_file():
                results[step] = {"status": "not run: no expert (run the align step first)"}
            else:
                prompt = f"a photo of a {info['held_out_names'][0]}" if info["held_out_names"] else "a photo of a dog"
                results[step] = run(_cli("search", root, prompt, "--expert", str(expert), "-k", "5"))
                results[step]["prompt"] = prompt
        elif step == "app":
            results[step] = measure_app(root, work, env, args, code)
        else:
            raise SystemExit(f"unknown step {step!r}")
        done(step)
    print_table(key, args.label, results)


def measure_app(root: str, work: Path, env: dict, args: argparse.Namespace, code: Path) -> dict:
    """Each page cold in its own process, then one process opening them all (the server's peak RSS)."""
    figures: dict[str, dict] = {"pages": {}}
    app = ["--app", str(code / "explorer" / "app.py")]
    for page in PAGES:
        env = {**env, "PROBEX_CACHE": str(work / f"cache-app-{page}")}
        out = work / f"app-{page}.json"
        step = run_step(f"app-{page}", [sys.executable, str(Path(__file__).resolve()), "_app", "--zoo", root, *app,
                                        "--result", str(out), "--timeout", str(args.timeout), "--pages", page],
                        work, env, args.limit_gb, args.timeout)
        shutil.rmtree(work / f"cache-app-{page}", ignore_errors=True)
        rows = json.loads(out.read_text()) if out.is_file() else {}
        row = rows.get(page, {})
        figures["pages"][page] = {"status": step["status"], "process_seconds": step["seconds"], "peak_rss_gb": step["peak_rss_gb"],
                                  "page_seconds": row.get("seconds"), "home_seconds": rows.get("home", {}).get("seconds"),
                                  "exceptions": row.get("exceptions"), "errors": row.get("errors")}
    out = work / "app-all.json"
    env = {**env, "PROBEX_CACHE": str(work / "cache-app-all")}
    session = run_step("app-all", [sys.executable, str(Path(__file__).resolve()), "_app", "--zoo", root, *app, "--result", str(out),
                                   "--timeout", str(args.timeout), "--pages", *PAGES], work, env, args.limit_gb, args.timeout)
    shutil.rmtree(work / "cache-app-all", ignore_errors=True)
    figures["session"] = {key: session[key] for key in ("status", "seconds", "peak_rss_gb", "sampled_group_peak_gb")}
    figures["session"]["pages"] = json.loads(out.read_text()) if out.is_file() else {}
    statuses = [row["status"] for row in figures["pages"].values()] + [session["status"]]
    clean = all(not row.get("exceptions") and not row.get("errors") for row in figures["session"]["pages"].values())
    figures["status"] = "ok" if all(s == "ok" for s in statuses) and clean and figures["session"]["pages"] else "failed"
    figures["seconds"] = session["seconds"]
    figures["peak_rss_gb"] = max([session["peak_rss_gb"]] + [row["peak_rss_gb"] for row in figures["pages"].values()])
    return figures


def _commit(code: Path) -> str:
    """The measured checkout's commit: a COMMIT file in it (an exported snapshot), else git's HEAD."""
    if (code / "COMMIT").is_file():
        return (code / "COMMIT").read_text().strip()
    result = subprocess.run(["git", "-C", str(code), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def _save(label: str, key: str, info: dict, results: dict, out: Path) -> None:
    data = json.loads(out.read_text()) if out.is_file() else {}
    data.setdefault("zoos", {})[key] = {k: v for k, v in info.items() if k != "held_out_names"}
    run = data.setdefault("runs", {}).setdefault(label, {}).setdefault(key, {})
    run.update(results)
    run["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average_1m": round(os.getloadavg()[0], 2),
                      "probex_threads": os.environ.get("PROBEX_THREADS", "(unset)"),
                      "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB, 1)}
    out.write_text(json.dumps(data, indent=1) + "\n")


def print_table(key: str, label: str, results: dict) -> None:
    print(f"\n{key} ({label}):  {'step':<10} {'status':<28} {'seconds':>8} {'peak RSS GB':>11}  figures")
    for step, row in results.items():
        if step == "code":
            continue
        figures = row.get("figures") or ({"bank GB on disk": row["bank_on_disk_gb"]} if "bank_on_disk_gb" in row else {})
        if step == "app":
            figures = {page: f"{p['page_seconds']} s, {p['peak_rss_gb']} GB" for page, p in row["pages"].items()}
        text = ", ".join(f"{name} {value['value']} (chance {value['chance']:.3f})" if isinstance(value, dict) else f"{name} {value}"
                         for name, value in figures.items())
        print(f"{'':{len(key) + len(label) + 5}}{step:<10} {row.get('status', '-')[:28]:<28} {row.get('seconds', '-'):>8} "
              f"{row.get('peak_rss_gb', '-'):>11}  {text}")


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="action", required=True)
    gen = commands.add_parser("generate", help="write a Model-J-sized zoo")
    gen.add_argument("kind", choices=("sd", "vit"))
    gen.add_argument("--models", type=int, required=True)
    gen.add_argument("--out", required=True, help="an empty folder (the zoo and scale_zoo.json go inside)")
    gen.add_argument("--modules", default="attn2", choices=("attn2", "minimal", "tiny", "all"),
                     help="SD: which UNet modules each file holds (scale_zoos.SD_SUBSETS)")
    gen.add_argument("--classes", type=int, default=200, help="SD: ImageNet classes (200: SD_200; 1000: SD_1k)")
    gen.add_argument("--held-out", type=int, help="SD: held-out classes (default 15%%: 30 of 200)")
    gen.add_argument("--images", type=int, default=1, help="SD: training images per model (tiny PNGs)")
    gen.add_argument("--subset", help="SD: the Model-J subset the folder is named after (default SD_200 / SD_1k)")
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(func=generate)

    meas = commands.add_parser("measure", help="measure each step on a generated zoo")
    meas.add_argument("zoo", help="the folder generate wrote")
    meas.add_argument("--label", default="after", help="the column these figures go in (before / after)")
    meas.add_argument("--steps", help="comma-separated (SD: open,bank,route,align,search,app; ViT: open,route,classify)")
    meas.add_argument("--layer", help="default: the paper's layer (SD) or layer 7's attention output (ViT)")
    meas.add_argument("--epochs", type=int, help="training epochs (default: the CLI's, with early stopping)")
    meas.add_argument("--limit-gb", type=float, default=12.0, help="kill a step whose processes pass this RSS")
    meas.add_argument("--timeout", type=float, default=3600.0, help="kill a step after this many seconds")
    meas.add_argument("--work", help="scratch folder for caches, logs, the expert (default /tmp/probex-bench-scale-<zoo>)")
    meas.add_argument("--code", help="the probex checkout to measure (default: this repository), e.g. an older commit's")
    meas.add_argument("--out", type=Path, default=HERE / "bench_scale.json", help="results (merged into the file)")
    meas.set_defaults(func=measure)

    inner = commands.add_parser("_wrap")
    inner.add_argument("--limit-gb", type=float, required=True)
    inner.add_argument("--timeout", type=float, required=True)
    inner.add_argument("--log", required=True)
    inner.add_argument("--result", required=True)
    inner.add_argument("argv", nargs=argparse.REMAINDER, help="-- the command")
    inner.set_defaults(func=wrap)

    page = commands.add_parser("_app")
    page.add_argument("--zoo", required=True)
    page.add_argument("--result", required=True)
    page.add_argument("--app", default=str(APP))
    page.add_argument("--timeout", type=float, default=3600.0)
    page.add_argument("--pages", nargs="+", default=PAGES)
    page.set_defaults(func=app_pages)

    args = parser.parse_args()
    if args.action == "_wrap" and args.argv[:1] == ["--"]:
        args.argv = args.argv[1:]
    args.func(args)


if __name__ == "__main__":
    main()
