"""The built-in demo jungle: a real miniature Model Jungle, built offline, shipped in assets/.

    from probex import jungle
    zoo = jungle.load()                 # the shipped jungle as a ModelZoo, no build step
    jungle.RECOMMENDED_LAYERS           # tree -> best layer, by the build's validation sweep
    jungle.expert_dirs()                # tree -> its pre-trained expert (probex.load_expert)
    jungle.build_jungle("my-jungle")    # or rebuild it (``probex jungle build``)

Modules: :mod:`~probex.jungle.concepts` (the 64 procedural concepts),
:mod:`~probex.jungle.architectures` and :mod:`~probex.jungle.forge` (small classifiers, trained
many at once), :mod:`~probex.jungle.discriminative` (roots, trees, forest),
:mod:`~probex.jungle.unet` and :mod:`~probex.jungle.generative` (the tiny text-to-image root and
its LoRA fine-tunes), :mod:`~probex.jungle.build` (the whole build),
:mod:`~probex.jungle.validation` (the layer sweep, recommended layers and shipped experts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from probex.shipped import assets_dir

#: Where the shipped jungle lies (built with ``probex jungle build --size full --out assets/jungle``;
#: ``probex/assets/jungle`` in an installed wheel).
SHIPPED = assets_dir() / "jungle"


def load(path: str | Path | None = None) -> Any:
    """The demo jungle as a ModelZoo: the shipped one by default, or a built one at ``path``."""
    from probex.errors import ZooError
    from probex.zoo import ModelZoo

    folder = Path(path) if path is not None else SHIPPED
    if not (folder / "probex_zoo.json").is_file():
        raise ZooError(
            f"{folder}: no demo jungle here (no probex_zoo.json). Build one with "
            f"`probex jungle build --out {folder}` (about 20 minutes on 2 CPU cores; "
            "`--size small` takes about 2 minutes)."
        )
    return ModelZoo.open(folder)


def expert_dirs(path: str | Path | None = None) -> dict[str, Path]:
    """tree -> the folder of the pre-trained expert shipped for it (load with ``probex.load_expert``)."""
    from probex.zoo.extras import expert_dirs as find

    return find(Path(path) if path is not None else SHIPPED)


def recommended_layers(path: str | Path | None = None) -> dict[str, str]:
    """tree -> the best layer by the build's own validation sweep (of the shipped jungle by default)."""
    from probex.zoo.extras import recommended_layers as read

    return read(Path(path) if path is not None else SHIPPED)


def __getattr__(name: str) -> Any:
    # RECOMMENDED_LAYERS is read from the shipped jungle when first asked for, not typed in.
    if name == "RECOMMENDED_LAYERS":
        return recommended_layers()
    raise AttributeError(f"module 'probex.jungle' has no attribute {name!r}")


def build_jungle(*args: Any, **kwargs: Any) -> Path:
    """Build a demo jungle; see :func:`probex.jungle.build.build_jungle`."""
    from probex.jungle.build import build_jungle as build

    return build(*args, **kwargs)
