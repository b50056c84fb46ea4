"""Extract the ImageNet-1k class table (synset id, index, readable name) from the timm wheel.

Run once, with timm installed, from anywhere::

    python assets/classnames/extract_imagenet.py

It reads ``timm/data/_info/imagenet_synsets.txt`` (the 1000 synset ids; the line order is the
class index) and ``imagenet_synset_to_lemma.txt`` (WordNet lemmas; the first one is the readable
name) and writes ``imagenet1k.tsv`` beside this script. probex reads the TSV; it never needs
timm at run time.

The first lemma names two pairs of classes alike ("crane": the bird n02012849 and the machine
n03126707; "maillot": n03710637 and n03710721). For those the table keeps the names of the
official ProbeX code's ImageNet table (its ``utils.py``), so that every class has its own name
and zero-shot text, as in the paper: OFFICIAL_NAMES below. The script refuses to write a table
whose names are not unique.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

#: The official ProbeX names of the classes whose first WordNet lemma another class shares.
OFFICIAL_NAMES = {
    "n02012849": "crane, bird",
    "n03126707": "construction crane",
    "n03710721": "maillot, tank suit",
}


def timm_info_folder() -> Path:
    """The ``data/_info`` folder of the installed timm package."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise SystemExit("timm is not installed: pip install timm, then run this script again")
    return Path(spec.origin).parent / "data" / "_info"


def imagenet_rows(info: Path) -> list[tuple[str, int, str]]:
    """(synset id, class index, name) for the 1000 ImageNet-1k classes, in index order.

    The name is the first lemma, or the official ProbeX name where that lemma is shared.
    """
    synsets = info.joinpath("imagenet_synsets.txt").read_text().split()
    lemmas = {}
    for line in info.joinpath("imagenet_synset_to_lemma.txt").read_text().splitlines():
        synset, _, names = line.partition("\t")
        lemmas[synset] = names.split(",")[0].strip()
    if len(synsets) != 1000:
        raise SystemExit(f"expected 1000 synsets in {info}, found {len(synsets)}")
    rows = [(synset, index, OFFICIAL_NAMES.get(synset, lemmas[synset])) for index, synset in enumerate(synsets)]
    names = [name for _, _, name in rows]
    shared = sorted({name for name in names if names.count(name) > 1})
    if shared:
        raise SystemExit(f"names shared by several classes: {', '.join(shared)}; add them to OFFICIAL_NAMES")
    return rows


def main() -> None:
    rows = imagenet_rows(timm_info_folder())
    lines = ["synset\tindex\tname"] + [f"{synset}\t{index}\t{name}" for synset, index, name in rows]
    target = Path(__file__).with_name("imagenet1k.tsv")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(rows)} classes to {target}")


if __name__ == "__main__":
    main()
