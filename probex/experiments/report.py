"""The reproduction report: the paper's analyses on any zoo that supports them, as Markdown and HTML.

``build_report(zoo)`` measures what the zoo allows and ``write_report(report, folder)`` writes
``report.md`` and ``report.html`` (``probex report ZOO --out FOLDER`` does both)::

    Router              trees found, held-out routing accuracy        (>= 2 trees with known names)
    Intra vs inter      a tree's best expert vs the forest's           (trees with the forest role)
    Table 1             per tree, at a hidden layer: ProbeX, Dense, StatNN (+ parameters), the MoE column;
                        the head's trivial read-out on a separate, explained line
    Table 2             alignment: in-distribution / zero-shot, ProbeX (1 and 2 layers), Dense, StatNN
    Table 3             kNN accuracy and one-class ROC-AUC (kNN, Ledoit-Wolf) over k
    Table 4             the ReLU ablation (ReLU vs linear ProbeX), alignment and training classes
    Multi-view          a multi-view ProbeX column in Tables 1-2 (MVProbe's four views), and the ablation
                        of view subsets on one classifier tree and each aligned tree, with the paper's figures
    Ablations           the paper's offline ablations (:mod:`probex.experiments.ablations`): probe sizes, encoder
                        depth and training-set size on the first classifier tree, training-set size and the
                        text encoder on the first aligned tree
    Table 5             the layer sweep of every tree: every layer's shape and scores

Which analysis a tree gets comes from its role (:class:`~probex.zoo.TreeRole`): aligned trees
(Tables 2-4), classifier trees (Table 1), the forest (the inter-tree control). The measurements
are the evaluation harness's (:mod:`probex.experiments.harness`). Each tree's layer is the best
of its sweep by validation (swept with the probe views the tree's role names, if any: the
multi-view column then holds those views, else all four); sweeps are appended to
``results_dir/<tree>.jsonl`` (the tree's name made safe for a path, :func:`probex.storage.safe_name`)
and resumed from there. ``write_report`` writes only into a folder that is new, empty or an
earlier report's.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from probex.progress import Progress

KS = (1, 5, 10)

#: MVProbe's figures on Model-J (arXiv 2605.23410; mean of 5 seeds, in %): ProbeX (the xu view alone) and
#: MVProbe (all four views). Training-class prediction per discriminative tree; SD alignment in-dist / zero-shot.
MVPROBE_FIGURES = {
    "xu": {"ResNet": 81.61, "SupViT": 88.08, "MAE": 77.11, "DINO": 72.54, "SD_200": "98.48 / 94.01",
           "SD_1k": "35.75 / 52.42"},
    "all": {"ResNet": 92.24, "SupViT": 92.33, "MAE": 81.62, "DINO": 78.29, "SD_200": "99.80 / 95.53",
            "SD_1k": "97.88 / 97.96"},
}


def _moe_column(zoo, trees: list[str], layers: dict[str, str], params: dict) -> dict:
    """Route the test models of the classifier trees with a router fitted on their training models; each
    routed model is scored by the expert of its tree (the paper's MoE column)."""
    from probex.experts.classifier import ProbeXClassifier
    from probex.experts.moe import MixtureOfExperts
    from probex.trees.router import TreeRouter

    population = zoo.select(tree=trees)
    mixture = MixtureOfExperts(TreeRouter(), expert=ProbeXClassifier(**params))
    mixture.fit(population, layers=sorted(set(layers.values())))
    test = population.select(split="test")
    rows = mixture.score_table(test)
    routed = mixture.router_.route(test)
    truth = [record.tree for record in test.records]
    names = {}
    for found in set(routed) - {None}:
        members = [true for true, tree in zip(truth, routed) if tree == found]
        names[found] = max(set(members), key=members.count)
    by_tree = {names.get(row["tree"], row["tree"]): row["score"] for row in rows if row["tree"] != "overall"}
    overall = next(row for row in rows if row["tree"] == "overall")
    return {"per_tree": by_tree, "overall": overall["score"], "unrouted": overall.get("unrouted", 0)}


def _alignment_tables(tree_zoo, sweep, params: dict) -> dict:
    from probex.experiments.harness import (MULTIVIEW, aligned_splits, alignment_figures, banks_for, chance_levels,
                                            measurable)
    from probex.experiments.metrics import knn_accuracy, one_class_auc
    from probex.experts.aligner import DenseAligner, ProbeXAligner, StatNNAligner, names_of

    splits = aligned_splits(tree_zoo)
    held_val, held_test = splits[2], splits[3]
    ranked = [score.layer for score in sweep.ranked()]
    single, pair = banks_for(tree_zoo, ranked[:1], splits), banks_for(tree_zoo, ranked[:2], splits)
    held_out = sorted(set(names_of(single[held_test][0].labels)))
    training = sorted(set(names_of(single["train"][0].labels)))

    def fit(expert, banks):
        return expert.fit(banks["train"], val=(banks[held_val], None))

    def in_and_zero(expert, banks) -> dict:
        return {"in_distribution": expert.score(banks["test"], candidates=training),
                "zero_shot": expert.score(banks[held_test], candidates=held_out),
                "n_parameters": int(expert.n_parameters_)}

    every = banks_for(tree_zoo, [info.name for info in tree_zoo.catalog()], splits)
    experts = {
        f"ProbeX ({ranked[0]})": (fit(ProbeXAligner(**params), single), single),
        f"ProbeX ({' + '.join(ranked[:2])})": (fit(ProbeXAligner(**params), pair), pair),
        f"multi-view ProbeX ({ranked[0]})": (fit(ProbeXAligner(**{**params, "views": MULTIVIEW}), single), single),
        f"Dense ({ranked[0]})": (fit(DenseAligner(**params), single), single),
        "StatNN-Linear (every layer)": (fit(StatNNAligner(model="linear", **params), every), every),
        "StatNN-MLP (every layer)": (fit(StatNNAligner(model="mlp", **params), every), every),
    }
    table2 = {name: in_and_zero(expert, banks) for name, (expert, banks) in experts.items()}

    best_name = max((name for name in table2 if name.startswith("ProbeX")), key=lambda n: table2[n]["zero_shot"])
    best, banks = experts[best_name]
    train, test = best.encode(banks["train"]), best.encode(banks["test"])
    train_names, test_names = names_of(banks["train"][0].labels), names_of(banks["test"][0].labels)
    table3 = {"expert": best_name, "rows": [
        {"k": k, "knn": knn_accuracy(train, train_names, test, test_names, k=k),
         "occ_knn": measurable(one_class_auc, train, train_names, test, test_names, method="knn", k=k)}
        for k in KS]}
    table3["occ_ledoit_wolf"] = measurable(one_class_auc, train, train_names, test, test_names, method="ledoit_wolf")

    linear = fit(ProbeXAligner(**{**params, "activation": "none"}), single)
    relu = experts[f"ProbeX ({ranked[0]})"][0]
    table4 = {"layer": ranked[0], "relu": in_and_zero(relu, single), "linear": in_and_zero(linear, single)}
    shipped_like = alignment_figures(best, banks, held_out, (held_val, held_test))
    return {"table2": table2, "table3": table3, "table4": table4, "uses": {"expert": best_name, **shipped_like},
            "chance": chance_levels(len(training), len(held_out)),
            "concepts": {"training": len(training), "held_out": len(held_out)}}


def _linear_ablation_classes(tree_zoo, layer: str, params: dict, relu_score: float) -> dict:
    from probex.experts.classifier import ProbeXClassifier

    train, val, test = (tree_zoo.bank(layer, split=split) for split in ("train", "val", "test"))
    linear = ProbeXClassifier(**{**params, "activation": "none"}).fit(train, val=(val, None))
    return {"layer": layer, "relu": relu_score, "linear": linear.score(test)}


def build_report(zoo, params: Optional[dict] = None, results_dir: Optional[str | Path] = None,
                 progress: Optional[Progress] = None, text_encoders: Optional[Sequence[str]] = None) -> dict:
    """Measure every analysis the zoo supports (see the module docstring); a dict of tables.

    ``text_encoders``: the encoders the text-encoder ablation tries (default
    :data:`~probex.experiments.ablations.TEXT_ENCODERS`, each only where it works without the network).
    """
    from probex.experiments.ablations import TEXT_ENCODERS, measure_ablations
    from probex.experiments.harness import (classifier_figures, evaluated_trees, forest_figures, multiview_columns,
                                            router_figures, task_of, tree_params, view_ablation)
    from probex.experiments.sweep import SWEEP_DEFAULTS, sweep_layers
    from probex.storage import safe_name
    from probex.zoo import FOREST

    params = {**SWEEP_DEFAULTS, "device": "auto", "seed": 0, **(params or {})}
    started = time.perf_counter()
    trees = evaluated_trees(zoo)
    has_forest = bool(zoo.trees_with_role(FOREST))
    steps = (["router"] if len(trees) >= 2 else []) + trees + (["forest"] if has_forest else [])
    steps += ["ablations"] if trees else []
    report: dict[str, Any] = {"zoo": zoo.name, "models": len(zoo), "params": params, "sweeps": {}, "table1": {}}
    layers: dict[str, str] = {}
    for done, step in enumerate(steps):
        if progress is not None:
            progress(done, len(steps), step)
        if step == "router":
            report["router"] = router_figures(zoo)
        elif step == "forest":
            report["forest"] = forest_figures(zoo, params)
        elif step == "ablations":
            classifier = next(((tree, layers[tree]) for tree in report["table1"]), None)
            aligned = next(((tree, layers[tree]) for tree in report.get("alignment") or {}), None)
            report["ablations"] = measure_ablations(zoo, classifier, aligned, params,
                                                    TEXT_ENCODERS if text_encoders is None else text_encoders)
        else:
            tree_zoo = zoo.select(tree=step)
            task = task_of(zoo, step)
            results = Path(results_dir) / f"{safe_name(step)}.jsonl" if results_dir is not None else None
            own = tree_params(zoo, step, params)  # the probe views the tree's role names, if any
            sweep = sweep_layers(tree_zoo, task=task, params=own, results=results)
            report["sweeps"][step] = {"task": task, "best": sweep.best.layer, "views": own.get("views", "xu"),
                                      "layers": [vars(s) for s in sweep.scores]}
            layers[step] = sweep.best.layer
            if task == "align":
                report.setdefault("alignment", {})[step] = _alignment_tables(tree_zoo, sweep, params)
            else:
                row = classifier_figures(zoo, step, sweep.best.layer, None, params)
                report["table1"][step] = {**row, **multiview_columns(zoo, step, row, params)}
            if task == "align" or not any(row["task"] == "classes" for row in report.get("views", {}).values()):
                report.setdefault("views", {})[step] = view_ablation(tree_zoo, sweep.best.layer, task, params)
    classifier_trees = [tree for tree in report["table1"]]
    if len(classifier_trees) >= 2:
        report["moe"] = _moe_column(zoo, classifier_trees, {t: layers[t] for t in classifier_trees}, params)
    if classifier_trees:
        first = classifier_trees[0]
        report["table4_classes"] = _linear_ablation_classes(zoo.select(tree=first), layers[first], params,
                                                            report["table1"][first]["probex"])
    if progress is not None:
        progress(len(steps), len(steps), "done")
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


# ---------------------------------------------------------------------------------- writing
def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_number(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def report_markdown(report: dict) -> str:
    """The report as Markdown: one section per analysis the zoo supported."""
    from probex.experiments.ablations import ablations_markdown

    out = [f"# ProbeX reproduction report: {report['zoo']}", "",
           f"{report['models']:,} models; experts trained with {report['params']}; measured in {report['seconds']} s "
           "by `probex report`.", ""]
    router = report.get("router")
    if router:
        out += ["## Router", "", f"{router['trees_found']} trees found ({router['true_trees']} true), without being told "
                f"their number; held-out routing accuracy **{router['held_out_accuracy']:.3f}** on "
                f"{router['held_out_models']:,} models.", ""]
    table1, moe, forest = report.get("table1") or {}, report.get("moe"), report.get("forest")
    if forest and table1:
        out += ["## Intra- vs inter-tree", "",
                "A linear-probing expert learns within a Model Tree; across independently initialised models "
                "(the forest) it does not. Test mean binary accuracy, chance 0.5:", ""]
        rows = [[tree, "within one tree", row["layer"], row["probex"]] for tree, row in table1.items()]
        rows.append(["forest", f"{forest['models']} random inits", forest["layer"], forest["probex"]])
        out += _table(["population", "kind", "layer (best by validation)", "ProbeX"], rows)
    if table1:
        out += ["## Table 1: training-class prediction", "",
                "Test split, mean binary accuracy (chance 0.5); each tree's layer is the best of its sweep by validation "
                "(a hidden layer: the head, a trivial read-out, is never chosen).", ""]
        header = ["tree", "layer", "ProbeX", "params", "multi-view", "views", "params", "Dense", "params", "StatNN"] + \
            (["MoE"] if moe else [])
        rows = []
        for tree, row in table1.items():
            cells = [tree, row["layer"], row["probex"], row["probex_parameters"], row.get("multiview"),
                     row.get("multiview_views"), row.get("multiview_parameters"), row["dense"], row["dense_parameters"],
                     row["statnn"]]
            rows.append(cells + ([moe["per_tree"].get(tree)] if moe else []))
        if moe:
            rows.append(["overall (routed)", "", None, None, None, "", None, None, None, None, moe["overall"]])
        out += _table(header, rows)
        out += _comparison_markdown(table1)
        out += _lesson_markdown(table1, report.get("sweeps") or {})
        heads = {tree: row["readout"] for tree, row in table1.items() if row.get("readout")}
        if heads:
            out += ["The read-out, apart: a classifier's head has one row per class slot, so reading the training "
                    "classes off it is a trivial read-out that says little about what the network learned; the "
                    "table above uses hidden layers, where the methods differ. The heads, measured apart:", ""]
            out += _table(["tree", "head", "ProbeX", "params", "Dense", "params"],
                          [[tree, head["layer"], head["probex"], head["probex_parameters"], head["dense"],
                            head["dense_parameters"]] for tree, head in heads.items()])
    for tree, alignment in (report.get("alignment") or {}).items():
        chance = alignment["chance"]
        concepts = alignment["concepts"]
        out += [f"## Table 2: alignment with text ({tree})", "",
                f"Top-1 over {concepts['training']} training concepts (in-distribution, chance {chance['in_distribution']:.3f}) "
                f"and over {concepts['held_out']} held-out concepts never seen in training (zero-shot, chance "
                f"{chance['zero_shot']:.3f}).", ""]
        out += _table(["expert", "in-distribution", "zero-shot", "params"],
                      [[name, row["in_distribution"], row["zero_shot"], row["n_parameters"]]
                       for name, row in alignment["table2"].items()])
        table3 = alignment["table3"]
        out += [f"## Table 3: kNN and one-class classification ({tree})", "",
                f"In the space of {table3['expert']}; kNN accuracy (chance {chance['in_distribution']:.3f}) and mean "
                f"one-class ROC-AUC (chance 0.5) of the test models against each training concept. Ledoit-Wolf: "
                f"{_number(table3['occ_ledoit_wolf'])}.", ""]
        out += _table(["k", "kNN accuracy", "OCC ROC-AUC (kNN)"], [[r["k"], r["knn"], r["occ_knn"]] for r in table3["rows"]])
        uses = alignment["uses"]
        out += [f"Retrieval (held-out models, nearest neighbour shares the concept): {uses['retrieval']:.3f}; "
                f"a held-out concept's name as a prompt ranks one of its models first: {uses['search_top1']:.3f}.", ""]
        table4 = alignment["table4"]
        out += [f"## Table 4: the ReLU ablation ({tree}, {table4['layer']})", ""]
        out += _table(["ProbeX", "in-distribution", "zero-shot"],
                      [["ReLU", table4["relu"]["in_distribution"], table4["relu"]["zero_shot"]],
                       ["linear (no activation)", table4["linear"]["in_distribution"], table4["linear"]["zero_shot"]]])
    classes = report.get("table4_classes")
    if classes:
        out += [f"Training-class prediction on {next(iter(table1))} ({classes['layer']}), test mean binary accuracy: "
                f"ReLU {classes['relu']:.3f}, linear {classes['linear']:.3f}.", ""]
    out += _views_markdown(report.get("views") or {})
    out += ablations_markdown(report.get("ablations") or {})
    if report["sweeps"]:
        out += ["## Table 5: the layer sweeps", "",
                "Every matrix layer, one expert each; the best by validation is marked. Alignment trees: val is "
                "zero-shot on val_holdout, test is in-distribution top-1. A read-out (a classifier's head, its rows the "
                "class slots) is measured but never chosen.", ""]
        for tree, sweep in report["sweeps"].items():
            views = sweep.get("views", "xu")
            out += [f"### {tree} ({sweep['task']}{'' if views == 'xu' else f', views {views}: the tree role names them'})", ""]
            rows = [[(("**" + s["layer"] + "**") if s["layer"] == sweep["best"] else s["layer"])
                     + (" (read-out)" if s.get("readout") else ""),
                     f"{s['shape'][0]}x{s['shape'][1]}", s["val"], s["test"], s.get("zero_shot_test"), s["n_parameters"]]
                    for s in sweep["layers"]]
            out += _table(["layer", "shape", "val", "test", "zero-shot test", "params"], rows)
    return "\n".join(out)


def _comparison_markdown(table1: dict) -> list[str]:
    """Multi-view against single-view ProbeX over several seeds, under Table 1 (one run moves by about a point)."""
    compared = {tree: row["views_comparison"] for tree, row in table1.items() if row.get("views_comparison")}
    if not compared:
        return []
    seeds = next(iter(compared.values()))["seeds"]
    return [f"Multi-view against single-view ProbeX on the same layer, both trained now with seeds "
            f"{', '.join(map(str, seeds))}: one run's score moves with its seed by about as much as the gap, so the "
            "gap is read off the means (spread: the standard deviation of the per-seed gaps).", ""] + \
        _table(["tree", "views", "ProbeX (mean)", "multi-view (mean)", "gap", "spread"],
               [[tree, c["views"], c["probex_mean"], c["multiview_mean"], f"{c['gap']:+.3f}", c["gap_sd"]]
                for tree, c in compared.items()])


def _lesson_markdown(table1: dict, sweeps: dict) -> list[str]:
    """The paper's parameter lesson under Table 1: per tree, the best ProbeX expert against Dense on the same layer."""
    from probex.experiments.harness import parameter_lesson

    lessons = {tree: parameter_lesson(row) for tree, row in table1.items()}
    rows = [[tree, f"{lesson['expert']} ({lesson['views']})", lesson["score"], lesson["parameters"], table1[tree]["dense"],
             table1[tree]["dense_parameters"], f"{lesson['margin']:+.3f}", f"{lesson['fewer']:.1f}x"]
            for tree, lesson in lessons.items() if lesson is not None]
    if not rows:
        return []
    chosen = {tree: sweep["views"] for tree, sweep in sweeps.items() if sweep.get("views", "xu") != "xu" and tree in table1}
    note = (" A tree whose role names other probe views (" + ", ".join(f"{tree}: {views}" for tree, views in chosen.items())
            + ") is swept with them, so its layer is the best for those views; its ProbeX column is single-view "
            "ProbeX on that layer.") if chosen else ""
    return ["The parameter lesson: the paper's ProbeX beats Dense with 25-45x fewer parameters on Model-J. Per tree, "
            "the best ProbeX expert (single- or multi-view) on the same layer, against Dense (margin: its score "
            "minus Dense's; fewer: Dense's parameters over its)." + note, ""] + \
        _table(["tree", "expert (views)", "score", "params", "Dense", "params", "margin", "fewer"], rows)


def _views_markdown(ablations: dict) -> list[str]:
    """The multi-view ablation: one row per view subset, the paper's Model-J figures beside ours."""
    if not ablations:
        return []
    out = ["## Multi-view probes: which views matter", "",
           "MVProbe (arXiv 2605.23410) probes a layer X through four views: X U (xu, ProbeX's only view), "
           "(X X^T) U (xxtu), X^T U (xtu) and (X^T X) U (xtxu); first = xu + xtu, second = xxtu + xtxu. Each row is "
           "one ProbeX expert with only those views, all else equal. The paper's figures are its Model-J results "
           "(%, mean of 5 seeds) for ProbeX (xu) and MVProbe (all); we carry no per-subset figures of its ablation.", ""]
    paper = {name: ", ".join(f"{tree} {value}" for tree, value in figures.items()) for name, figures in MVPROBE_FIGURES.items()}
    for tree, ablation in ablations.items():
        out += [f"### {tree} ({ablation['layer']}): {ablation['metric']}", ""]
        out += _table(["views", "score", "val", "params", "paper (Model-J)"],
                      [[row["views"], row["score"], row["val"], row["n_parameters"], paper.get(row["views"], "")]
                       for row in ablation["rows"]])
    return out


def report_html(markdown: str, title: str = "ProbeX reproduction report") -> str:
    """A self-contained HTML page of the report's Markdown (headings, paragraphs, tables, bold)."""
    import re

    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
        return re.sub(r"`(.+?)`", r"<code>\1</code>", text)

    body, table = [], []

    def flush_table() -> None:
        if table:
            rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table if not line.startswith("|---")]
            body.append("<table><thead><tr>" + "".join(f"<th>{inline(c)}</th>" for c in rows[0]) + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
                        + "</tbody></table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        heading = re.match(r"^(#+) (.*)$", line)
        if heading:
            level = len(heading.group(1))
            body.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.strip():
            body.append(f"<p>{inline(line)}</p>")
    flush_table()
    style = ("body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


REPORT_KIND = "probex-report"


def claim_report_folder(folder: str | Path) -> Path:
    """``folder`` made ready for a report: new, empty or an earlier report's (ProbeXError otherwise)."""
    from probex.storage import claim_directory, json_field

    written_before_markers = lambda path: json_field(Path(path) / "report.json", "zoo") is not None  # noqa: E731
    return claim_directory(folder, REPORT_KIND, legacy=written_before_markers)


def write_report(report: dict, folder: str | Path) -> tuple[Path, Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``folder`` (atomically); their paths."""
    from probex.storage import atomic_write_json, atomic_write_text

    folder = claim_report_folder(folder)
    markdown = report_markdown(report)
    atomic_write_text(folder / "report.md", markdown + "\n")
    atomic_write_text(folder / "report.html", report_html(markdown, f"ProbeX reproduction report: {report['zoo']}"))
    atomic_write_json(folder / "report.json", report)
    return folder / "report.md", folder / "report.html"
