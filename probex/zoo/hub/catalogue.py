"""The Model-J catalogue: its subsets and splits, and where each subset's list of models lives.

The model list of a discriminative subset is the ``hf_model_id`` column of its table in the
metadata dataset ``ProbeX/Model-J`` (one config per subset); this is the only module that
knows where that table lives.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from probex.errors import ZooError
from probex.zoo.hub.environment import hub_endpoint

logger = logging.getLogger(__name__)

MODELJ_DATASET = "ProbeX/Model-J"
DISCRIMINATIVE_SUBSETS = ("SupViT", "DINO", "MAE", "ResNet")
GENERATIVE_SUBSETS = ("SD_200", "SD_1k")
DISCRIMINATIVE_SPLITS = ("train", "val", "test")
GENERATIVE_SPLITS = ("train", "val", "test", "val_holdout", "test_holdout")

def modelj_subset(name: str) -> str:
    """The canonical Model-J subset name for ``name`` (case and dots ignored: ``sup.vit`` -> ``SupViT``)."""
    wanted = name.replace(".", "").replace("-", "_").lower()
    for subset in DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS:
        if subset.lower() == wanted:
            return subset
    raise ZooError(
        f"unknown Model-J subset {name!r}; choose one of "
        f"{', '.join(DISCRIMINATIVE_SUBSETS + GENERATIVE_SUBSETS)}"
    )


def modelj_model_ids(subset: str, split: str, *, endpoint: str | None = None, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Hub repo ids of the models of one split of a discriminative Model-J subset.

    Read from the metadata dataset ``ProbeX/Model-J`` (one config per subset; the table's
    ``hf_model_id`` column). This is the only place that knows where the model list lives.
    """
    table = _read_modelj_table(modelj_subset(subset), split, endpoint=endpoint, cache_dir=cache_dir)
    for column in ("hf_model_id", "model_id", "repo_id"):
        if column in table:
            return [str(value) for value in table[column]]
    raise ZooError(
        f"{MODELJ_DATASET} ({subset}/{split}): the table has no hf_model_id column; "
        f"columns: {', '.join(table)}"
    )


def _read_modelj_table(subset: str, split: str, endpoint: str | None, cache_dir: str | os.PathLike | None) -> dict[str, list]:
    """The metadata table of one subset and split of the ``ProbeX/Model-J`` dataset, as columns.

    Looks for table files (parquet, csv, jsonl) whose path names the subset and the split, on
    the main branch and then on the Hub's automatic parquet conversion.
    """
    from huggingface_hub import HfApi, hf_hub_download

    endpoint = endpoint or hub_endpoint()
    api = HfApi(endpoint=endpoint)
    seen: list[str] = []
    for revision in ("main", "refs/convert/parquet"):
        try:
            files = api.list_repo_files(MODELJ_DATASET, repo_type="dataset", revision=revision)
        except Exception as error:  # noqa: BLE001 - the conversion branch may not exist
            from probex.zoo.hub.retry import is_transient

            if is_transient(error):
                raise
            logger.info("%s@%s: cannot list files (%s)", MODELJ_DATASET, revision, error)
            continue
        seen += files
        chosen = [name for name in files if _names_subset_and_split(name, subset, split)]
        if not chosen:
            continue
        columns: dict[str, list] = {}
        for name in sorted(chosen):
            local = hf_hub_download(
                MODELJ_DATASET, name, repo_type="dataset", revision=revision, cache_dir=cache_dir, endpoint=endpoint
            )
            for key, values in _read_table(Path(local)).items():
                columns.setdefault(key, []).extend(values)
        return columns
    raise ZooError(
        f"{MODELJ_DATASET}: no table for subset {subset!r}, split {split!r} "
        f"(files seen: {', '.join(seen[:10]) or 'none'}); use `probex download repos ID...` with the model ids instead"
    )


_TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl", ".json")


def _names_subset_and_split(path: str, subset: str, split: str) -> bool:
    if not path.lower().endswith(_TABLE_SUFFIXES):
        return False
    # Split on "/", "-" and "." only: "val_holdout" stays one token and never matches "val".
    tokens = [token.lower() for token in re.split(r"[/.\-]", path)]
    return subset.lower() in tokens and split.lower() in tokens


def _read_table(path: Path) -> dict[str, list]:
    """A small table file as ``{column: values}``."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as parquet

        return parquet.read_table(path).to_pydict()
    if path.suffix == ".csv":
        import csv

        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    else:
        import json

        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
    columns: dict[str, list] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns
