"""The demo jungle's discriminative trees: small image classifiers fine-tuned from shared roots.

Like Model-J's Sup.ViT / DINO / MAE / ResNet subsets, on a scale one CPU core can train:

- four trees of ~300 models each: ``cnn-supervised`` and ``cnn-attributes`` share the SmallCNN
  architecture but grow from different roots (another seed, another pre-training objective:
  16-way concept classification vs. 8 shape + 8 colour attributes — the DINO-vs-MAE case), and
  are fully fine-tuned; ``mixer-supervised`` grows from a wider MLP-Mixer root (64-wide tokens,
  512-wide channel MLPs) by LoRA fine-tuning, as PEFT does it: rank-4 updates of the two
  channel-MLP output layers (64 x 512), each run starting its own LoRA initialisation, and a
  trained head; its files hold those updates and the head; ``cnn-own-heads`` (a third SmallCNN
  root) is fine-tuned like ``cnn-supervised`` but every model starts its head from its OWN random
  initialisation, as fine-tunes on the Hub do (below); its role names the probe views ``xtxu``;
- a forest: SmallCNNs each fine-tuned from its OWN random initialisation (trees "forest-NNN").

Roots are pre-trained on 16 concepts disjoint from the fine-tuning pool of 24. Each model is
fine-tuned on a random 12 of the 24 with random learning rate, weight decay, epochs and
augmentation; its labels are those 12 class names. Every model of the first three trees starts
its new 12-way head from the SAME initialisation: with a fresh random head per model, single-view
ProbeX and Dense read almost nothing (measured in feasibility: 0.52-0.56, like the forest). The
reason is that the update of the layer the head reads (conv3) is about a sum over classes of
(the head's random output-side direction) x (a class feature on the input side): the output side
changes sign and direction from model to model, so no linear read-out sees the classes. The
input-side Gram matrix X^T X removes it, and the multi-view probes' view (X^T X) U reads them
(``benchmarks/study_recipes_own_head_*.json``; 0.61 vs Dense's 0.51 at 1x steps): so the
jungle ships one such tree, ``cnn-own-heads``, read through that view.

The pool is cut into 12 fixed pairs (pool class j and j + 12) and a model learns one class of
each pair, on head row j. Measured here: with a free choice of 12 of 24 classes put on the
head rows in sorted order, a class lands on a different row from model to model, and ProbeX
and Dense read only 0.62-0.65 from the last conv layer (200 models, cnn-supervised); with the
pairs, both read 0.99-1.0. So the demo's discriminative task is easier than Model-J's; the
forest (its own random start per model) stays unreadable either way. The head itself, whose
rows are the class slots, is a trivial read-out: sweeps measure it but recommend hidden layers.
``TreeRecipe.head`` names this layout ("pairs"); "own" is ``cnn-own-heads``' layout, and
"masked" serves studies of other recipes (``benchmarks/study_recipes.py``).

Every model trains on the first :data:`SHARED_IMAGES` renders of each of its classes (and its
own random draw of the rest): those renders are written once per tree and class
(:func:`write_class_images`) and listed as each model's training images.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from probex.errors import ProbeXError
from probex.jungle.architectures import add_lora, make_model
from probex.jungle.concepts import COLOUR_NAMES, SHAPES, concept, render
from probex.jungle.forge import train_stacked
from probex.experts.training import seeded

logger = logging.getLogger(__name__)

N_SHAPES = len(SHAPES)
# Latin-square choices: colour c takes shapes c+k (mod 8); every colour and shape appears
# equally often in each set, and the sets are disjoint.
PRETRAIN_CONCEPTS = tuple(sorted(c * N_SHAPES + (c + k) % N_SHAPES for c in range(len(COLOUR_NAMES)) for k in (0, 1)))
POOL_CONCEPTS = tuple(sorted(c * N_SHAPES + (c + k) % N_SHAPES for c in range(len(COLOUR_NAMES)) for k in (2, 3, 4)))
CLASSES_PER_MODEL = 12
IMAGES_PER_CLASS = 100  # each model's own training images per chosen class
POOL_IMAGES_PER_CONCEPT = 256
#: The first renders of each pool class, in every model's training set: the images the jungle shows
#: as a model's training images (written once per tree and class, shared by reference).
SHARED_IMAGES = 3
CLASS_IMAGES_FOLDER = "class_images"
BATCH = 32
MODELS_AT_ONCE = 64


@dataclass(frozen=True)
class LoraRecipe:
    """LoRA fine-tuning: the target layers get rank-r updates (each model its own initialisation),
    the head trains in full, everything else stays the root's; a model's file holds what trained."""

    targets: tuple[str, ...]
    rank: int = 4
    step_scale: float = 1.0  # fine-tuning steps as a fraction of the full fine-tuning recipe's


#: How a tree's models lay their classes on the head (``TreeRecipe.head``):
#: "pairs" (the shipped trees): a 12-way head, row j holds pool class j or j + 12, one shared
#: initialisation per tree; "masked": a 24-way head, one row per pool class (shared initialisation),
#: each model training only its own 12 rows (the other 12 keep the initialisation but for weight decay:
#: the head itself then gives the classes away); "own": the pairs, but every model starts its head from its own random
#: initialisation, as a fresh classifier head does on the Hub.
HEAD_LAYOUTS = ("pairs", "masked", "own")


@dataclass(frozen=True)
class TreeRecipe:
    name: str
    architecture: str
    objective: Optional[str]  # "supervised", "attributes", or None for the forest (no root)
    seed: int
    lora: Optional[LoraRecipe] = None  # None: full fine-tuning
    head: str = "pairs"  # one of HEAD_LAYOUTS
    #: The probe views the tree's experts read (probex.experts.views); written into the manifest's tree
    #: role, so the validation sweep, the report and the app use them. "xu" is ProbeX's own view.
    views: str = "xu"

    def __post_init__(self) -> None:
        if self.head not in HEAD_LAYOUTS:
            raise ProbeXError(f"head must be one of {HEAD_LAYOUTS}; got {self.head!r}")

    @property
    def head_rows(self) -> int:
        """The fine-tuned models' head size: 12, or one row per pool class for the masked layout."""
        return len(POOL_CONCEPTS) if self.head == "masked" else CLASSES_PER_MODEL


TREES = (
    TreeRecipe("cnn-supervised", "cnn", "supervised", 101),
    TreeRecipe("cnn-attributes", "cnn", "attributes", 202),
    TreeRecipe("mixer-supervised", "wide-mixer", "supervised", 303,
               lora=LoraRecipe(("block1.channel_fc2", "block2.channel_fc2"), rank=4, step_scale=0.15)),
    TreeRecipe("cnn-own-heads", "cnn", "supervised", 505, head="own", views="xtxu"),
)
FOREST = TreeRecipe("forest", "cnn", None, 404)


@dataclass(frozen=True)
class Size:
    models_per_tree: int
    forest_models: int
    root_steps: int
    step_scale: float = 1.0  # fine-tuning steps as a fraction of the recipe's


SIZES = {"full": Size(300, 300, 2000), "small": Size(20, 20, 150, step_scale=0.25)}


def _attribute_targets(concept_ids: torch.Tensor) -> torch.Tensor:
    """[N, 16]: one-hot shape (8) then one-hot colour (8)."""
    return torch.cat([F.one_hot(concept_ids % N_SHAPES, N_SHAPES), F.one_hot(concept_ids // N_SHAPES, N_SHAPES)], 1).float()


def _augment(images: torch.Tensor, on: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and 1-pixel shifts for the images whose ``on`` flag is set."""
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5) & on
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    shift = torch.randint(-1, 2, (2,), generator=generator)
    shifted = torch.roll(images, shifts=(int(shift[0]), int(shift[1])), dims=(-2, -1))
    return torch.where(on[:, None, None, None], shifted, images)


def pretrain_root(recipe: TreeRecipe, steps: int, progress: Optional[Callable] = None) -> nn.Module:
    """Pre-train a tree's root on the 16 pre-training concepts with the recipe's objective."""
    generator = torch.Generator().manual_seed(recipe.seed)
    concepts = torch.tensor(PRETRAIN_CONCEPTS)
    images = render(concepts.repeat_interleave(512), generator)
    labels = torch.arange(len(concepts)).repeat_interleave(512)
    with seeded(recipe.seed):
        model = make_model(recipe.architecture, 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    for step in range(steps):
        index = torch.randint(0, len(images), (64,), generator=generator)
        batch = _augment(images[index], torch.ones(64, dtype=torch.bool), generator)
        outputs = model(batch)
        if recipe.objective == "attributes":
            loss = F.binary_cross_entropy_with_logits(outputs, _attribute_targets(concepts[labels[index]]))
        else:
            loss = F.cross_entropy(outputs, labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress is not None and (step + 1) % 50 == 0:
            progress(step + 1, steps, f"root {recipe.name} loss {float(loss.detach()):.3f}")
    return model.eval()


@torch.no_grad()
def root_accuracy(model: nn.Module, recipe: TreeRecipe, seed: int = 7) -> float:
    """Held-out accuracy of a root on its own pre-training task (fresh renders)."""
    generator = torch.Generator().manual_seed(seed)
    concepts = torch.tensor(PRETRAIN_CONCEPTS)
    labels = torch.arange(len(concepts)).repeat_interleave(64)
    outputs = model(render(concepts[labels], generator))
    if recipe.objective == "attributes":
        targets = _attribute_targets(concepts[labels])
        shape_ok = outputs[:, :N_SHAPES].argmax(1) == targets[:, :N_SHAPES].argmax(1)
        colour_ok = outputs[:, N_SHAPES:].argmax(1) == targets[:, N_SHAPES:].argmax(1)
        return float((shape_ok & colour_ok).float().mean())
    return float((outputs.argmax(1) == labels).float().mean())


@dataclass
class FineTune:
    """One fine-tuned model: what it was trained on, how, and its weights."""

    index: int
    tree: str
    classes: list[str]
    hyperparameters: dict
    weights: dict[str, torch.Tensor]


def _sample_hyperparameters(n: int, generator: torch.Generator, step_scale: float = 1.0) -> dict[str, torch.Tensor]:
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)
    epochs = torch.randint(2, 5, (n,), generator=generator)
    return {
        "lr": torch.exp(uniform(math.log(5e-4), math.log(5e-3))),
        "weight_decay": torch.exp(uniform(math.log(1e-5), math.log(1e-2))),
        "epochs": epochs,
        "steps": (epochs * (CLASSES_PER_MODEL * IMAGES_PER_CLASS // BATCH) * step_scale).ceil().long(),
        "augment": torch.rand(n, generator=generator) < 0.5,
    }


def fine_tune_tree(
    recipe: TreeRecipe,
    root: Optional[nn.Module],
    n_models: int,
    seed: int,
    progress: Optional[Callable] = None,
    step_scale: float = 1.0,
) -> list[FineTune]:
    """Fine-tune ``n_models`` models of one tree (all from ``root``; from random inits when None).

    ``step_scale`` shortens (< 1) every model's fine-tuning, for quick builds.
    """
    generator = torch.Generator().manual_seed(seed * 1000 + recipe.seed)
    pool = torch.tensor(POOL_CONCEPTS)
    pool_images = render_pool(generator)
    hyper = _sample_hyperparameters(n_models, generator, step_scale * (recipe.lora.step_scale if recipe.lora else 1.0))
    if recipe.head == "masked":  # any 12 of the 24, each on its own row of a 24-way head
        chosen = torch.stack([torch.randperm(len(pool), generator=generator)[:CLASSES_PER_MODEL].sort().values
                              for _ in range(n_models)])
    else:
        # Head row j of every model stands for pool pair j = (j, j + 12), of which the model learns
        # one: a random half of the pool, with each class always on the same row (see PAIRS).
        pick = torch.randint(0, 2, (n_models, CLASSES_PER_MODEL), generator=generator)
        chosen = torch.arange(CLASSES_PER_MODEL) + CLASSES_PER_MODEL * pick
    own_images = own_image_indices(n_models, generator)
    with seeded(recipe.seed + 1):  # ONE head initialisation per tree
        shared_head = make_model(recipe.architecture, recipe.head_rows).head.state_dict()

    results: list[FineTune] = []
    for start in range(0, n_models, MODELS_AT_ONCE):
        group = list(range(start, min(start + MODELS_AT_ONCE, n_models)))
        models = []
        for i in group:
            with seeded(seed * 100_000 + recipe.seed * 1000 + i):
                model = make_model(recipe.architecture, recipe.head_rows)
            if root is not None:
                body = {k: v for k, v in root.state_dict().items() if not k.startswith("head.")}
                model.load_state_dict(body, strict=False)
                if recipe.head != "own":  # "own": the head keeps this model's own random initialisation
                    model.head.load_state_dict(shared_head)
            if recipe.lora is not None:
                with seeded(seed * 100_000 + recipe.seed * 1000 + i + 500):  # each run its own LoRA initialisation
                    add_lora(model, recipe.lora.targets, recipe.lora.rank)
            models.append(model)
        members = torch.tensor(group)

        def sample_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
            labels = torch.randint(0, CLASSES_PER_MODEL, (len(group), BATCH), generator=generator)
            picks = torch.randint(0, IMAGES_PER_CLASS, (len(group), BATCH), generator=generator)
            concept_rows = chosen[members][:, None].expand(-1, BATCH, -1).gather(2, labels[..., None])[..., 0]
            image_rows = own_images[members[:, None], labels, picks]
            images = pool_images[concept_rows, image_rows]  # [M, B, 3, 16, 16]
            on = hyper["augment"][members][:, None].expand(-1, BATCH).reshape(-1)
            images = _augment(images.reshape(-1, 3, 16, 16), on, generator).view(len(group), BATCH, 3, 16, 16)
            if recipe.head == "masked":  # the class's own row, among the model's 12 rows
                return images, (labels, chosen[members])
            return images, labels

        states = train_stacked(
            models,
            sample_batch,
            _masked_cross_entropy if recipe.head == "masked" else F.cross_entropy,
            steps=hyper["steps"][members],
            lr=hyper["lr"][members],
            weight_decay=hyper["weight_decay"][members],
        )
        for i, state in zip(group, states):
            results.append(
                FineTune(
                    index=i,
                    tree=recipe.name if root is not None else f"forest-{i + 1:03d}",
                    classes=[concept(int(pool[j])).name for j in chosen[i]],
                    hyperparameters={
                        "architecture": recipe.architecture,
                        "base_model": recipe.name if root is not None else "random-init",
                        **({"fine_tuning": f"lora rank {recipe.lora.rank}"} if recipe.lora else {}),
                        **({"head": recipe.head} if recipe.head != "pairs" else {}),
                        "lr": float(hyper["lr"][i]),
                        "weight_decay": float(hyper["weight_decay"][i]),
                        "epochs": int(hyper["epochs"][i]),
                        "steps": int(hyper["steps"][i]),
                        "augment": bool(hyper["augment"][i]),
                    },
                    weights=state,
                )
            )
        if progress is not None:
            progress(len(results), n_models, f"{recipe.name}: {len(results)}/{n_models} models")
    return results


def _masked_cross_entropy(outputs: torch.Tensor, targets: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy over one model's own head rows: targets = (label [B] in 0..11, its 12 rows [12])."""
    labels, rows = targets
    return F.cross_entropy(torch.index_select(outputs, 1, rows), labels)


def own_image_indices(n_models: int, generator: torch.Generator) -> torch.Tensor:
    """[n_models, 12, IMAGES_PER_CLASS]: which pool renders each model trains on, per chosen class.

    The first :data:`SHARED_IMAGES` renders are every model's (the images the jungle shows as its
    training images); the rest are its own random draw.
    """
    shared = torch.arange(SHARED_IMAGES)
    rows = [torch.cat([shared, SHARED_IMAGES + torch.randperm(POOL_IMAGES_PER_CONCEPT - SHARED_IMAGES,
                                                              generator=generator)[:IMAGES_PER_CLASS - SHARED_IMAGES]])
            for _ in range(n_models * CLASSES_PER_MODEL)]
    return torch.stack(rows).view(n_models, CLASSES_PER_MODEL, IMAGES_PER_CLASS)


def render_pool(generator: torch.Generator) -> torch.Tensor:
    """The fine-tuning pool's images [24, POOL_IMAGES_PER_CONCEPT, 3, 16, 16], rendered from ``generator``."""
    pool = torch.tensor(POOL_CONCEPTS)
    images = render(pool.repeat_interleave(POOL_IMAGES_PER_CONCEPT), generator)
    return images.view(len(pool), POOL_IMAGES_PER_CONCEPT, 3, 16, 16)


def write_class_images(recipe: TreeRecipe, seed: int, root_dir: Path, folder: str) -> str:
    """Write the :data:`SHARED_IMAGES` renders of each pool class that every model of the tree trained on.

    They are the first renders of the tree's pool (the same generator state as
    :func:`fine_tune_tree` starts from), as 8-bit PNG files, one sub-folder per class
    (``discriminative/<folder>/class_images/<safe class name>/<k>.png``, see
    :func:`probex.zoo.manifest.class_images_folder`). Returns that folder relative to ``root_dir``:
    a model's manifest entry names it as ``{"per_label": folder}`` and shows its classes' renders.
    """
    from PIL import Image

    from probex.zoo.manifest import class_images_folder

    pool_images = render_pool(torch.Generator().manual_seed(seed * 1000 + recipe.seed))
    relative = Path("discriminative") / folder / CLASS_IMAGES_FOLDER
    for row, concept_id in enumerate(POOL_CONCEPTS):
        target = root_dir / class_images_folder(relative, concept(concept_id).name)
        target.mkdir(parents=True, exist_ok=True)
        for number in range(SHARED_IMAGES):
            pixels = (pool_images[row, number] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            Image.fromarray(pixels.numpy()).save(target / f"{number}.png", optimize=False)
    return relative.as_posix()


def split_of(index: int, n_models: int, seed: int) -> str:
    """70/10/20 train/val/test, by a seeded permutation of a tree's model indices."""
    rank = int(torch.argsort(torch.randperm(n_models, generator=torch.Generator().manual_seed(seed)))[index])
    if rank < round(0.7 * n_models):
        return "train"
    return "val" if rank < round(0.8 * n_models) else "test"


def write_models(models: list[FineTune], root_dir: Path, folder: str, seed: int,
                 class_images: Optional[str] = None) -> list[dict]:
    """Write each model as fp16 safetensors with its metadata; return manifest entries.

    ``class_images`` (the folder :func:`write_class_images` wrote) gives each entry its training
    images by reference: the renders of its classes, in the order of its labels.
    """
    from probex.zoo.manifest import PER_LABEL, save_model_file

    entries = []
    for model in models:
        model_id = f"{folder}/ft-{model.index:04d}"
        relative = f"discriminative/{folder}/ft-{model.index:04d}.safetensors"
        split = split_of(model.index, len(models), seed + sum(map(ord, folder)))
        metadata = {**model.hyperparameters, "seed": seed}
        tensors = {name: tensor.half() for name, tensor in model.weights.items()}
        save_model_file(root_dir / relative, tensors, id=model_id, split=split, tree=model.tree,
                        labels=model.classes, metadata=metadata)
        entries.append({"id": model_id, "path": relative, "split": split, "tree": model.tree,
                        "labels": model.classes, "metadata": {k: str(v) for k, v in metadata.items()},
                        "images": {PER_LABEL: class_images} if class_images else None})
    return entries
