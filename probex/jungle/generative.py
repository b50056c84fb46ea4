"""The generative half of the demo jungle: a mini text-to-image root and its zoo of LoRA fine-tunes.

Like Model-J's SD_200: one shared root (here :class:`probex.jungle.unet.MiniUNet`, pre-trained
by flow matching on all 64 concepts with MiniLM captions) and many DreamBooth-style LoRA
fine-tunes, each on 5-10 rendered images of ONE concept, captioned with a random template
("a photo of a red star"), with a random learning rate and number of steps. 48 concepts give
the train / val / test models (70 / 10 / 20 of each concept's models); 16 held-out concepts
(each colour twice, each shape twice: new combinations of known words) give val_holdout and
test_holdout (1/3 and 2/3 of each held-out concept's models), for compositional zero-shot.

Written exactly in the Model-J generative layout, so the reader of the real SD_200 reads it::

    out_dir/{split}/model_idx_NNNN/pytorch_lora_weights.safetensors   # fp16 .lora.down/up.weight
    out_dir/{split}/model_idx_NNNN/training_images/00.png ...          # the images it trained on
    out_dir/root/unet.safetensors, config.json                         # the root (float32)
    out_dir/build.json                                                 # recipe, held-out concepts

Each LoRA file's metadata (strings) says what the model is: ``concept`` ("red star"),
``concept_id``, ``base_model`` ("mini-sd"), the hyperparameters ``lr``, ``steps``, ``rank``,
``template``, ``n_images``, ``seed``, and ``id``, ``split``, ``tree``, ``labels`` as in our
manifest format (:mod:`probex.zoo.manifest`). Model ids are unique across splits.

Many LoRA models train at once (stacked factors, one batched forward; see
:mod:`probex.jungle.unet`) with per-model Adam state, learning rate and step count.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from probex.jungle.forge import StackedAdam
from probex.jungle.concepts import COLOUR_NAMES, N_CONCEPTS, SHAPES, concept, concept_names, render
from probex.jungle.unet import (
    MiniUNet,
    UNetConfig,
    flow_matching_loss,
    init_lora_factors,
    load_root,
    lora_targets,
    sample,
    save_root,
)
from probex.errors import ProbeXError
from probex.language.text import PROMPT_TEMPLATES, TextEncoder, load_text_encoder
from probex.storage import atomic_directory, atomic_write_json, json_field
from probex.zoo.safefile import write_safetensors

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]

TREE = "mini-sd"
TEXT_ENCODER = "minilm"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
IMAGES_FOLDER = "training_images"
ROOT_FOLDER = "root"
BUILD_INFO = "build.json"
IN_DISTRIBUTION_SPLITS = ("train", "val", "test")
HOLDOUT_SPLITS = ("val_holdout", "test_holdout")
N_HELD_OUT = 16
CAPTION_DROPOUT = 0.1

# Split patterns, cycled over a concept-by-concept list of models: 7/1/2 and 1/2 of every 10 / 3.
_IN_DISTRIBUTION_PATTERN = ("train", "train", "val", "train", "test", "train", "train", "train", "test", "train")
_HOLDOUT_PATTERN = ("test_holdout", "val_holdout", "test_holdout")


@dataclass(frozen=True)
class GenerativeRecipe:
    """How big the generative tree is and how its models are trained."""

    models_per_concept: int
    pretrain_steps: int
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    lora_steps: tuple[int, int] = (6, 14)  # inclusive range, drawn per model
    lora_lr: tuple[float, float] = (5e-4, 5e-3)  # log-uniform
    images_per_model: tuple[int, int] = (5, 10)  # inclusive range
    images_per_step: int = 4
    rank: int = 4
    models_at_once: int = 32
    #: The projections written to the files (all four are trained); q and k keep the jungle small.
    saved_projections: tuple[str, ...] = ("to_q", "to_k")


RECIPES = {
    "full": GenerativeRecipe(models_per_concept=25, pretrain_steps=1875),
    "small": GenerativeRecipe(models_per_concept=2, pretrain_steps=30, pretrain_batch=16, lora_steps=(2, 3), models_at_once=64),
}


@dataclass(frozen=True)
class LoraPlan:
    """One LoRA model to train: everything drawn for it before training starts."""

    number: int  # NNNN of model_idx_NNNN, unique across splits
    concept_id: int
    split: str
    seed: int
    lr: float
    steps: int
    template: str
    n_images: int

    @property
    def folder(self) -> str:
        return f"{self.split}/model_idx_{self.number:04d}"

    @property
    def prompt(self) -> str:
        return self.template.format(concept(self.concept_id).name)


def held_out_concepts(seed: int) -> list[int]:
    """16 concept ids in which every colour and every shape appears exactly twice (sorted)."""
    rng = np.random.default_rng([seed, 7])
    first = rng.permutation(len(SHAPES))  # colour c -> one shape
    shift = rng.permutation(len(COLOUR_NAMES))
    while np.any(shift == np.arange(len(shift))):  # a derangement: the second shape differs from the first
        shift = rng.permutation(len(COLOUR_NAMES))
    second = first[shift]
    ids = {c * len(SHAPES) + int(s) for c, s in enumerate(first)} | {c * len(SHAPES) + int(s) for c, s in enumerate(second)}
    assert len(ids) == N_HELD_OUT
    return sorted(ids)


def plan_lora_models(recipe: GenerativeRecipe, seed: int) -> list[LoraPlan]:
    """Every LoRA model of the zoo: concept, split and hyperparameters, deterministic for ``seed``."""
    rng = np.random.default_rng([seed, 11])
    held_out = set(held_out_concepts(seed))
    pairs = [(concept_id, copy) for concept_id in range(N_CONCEPTS) for copy in range(recipe.models_per_concept)]
    order = rng.permutation(len(pairs))  # model numbers do not reveal the concept
    number_of = {pairs[position]: number for number, position in enumerate(order)}
    splits: dict[tuple[int, int], str] = {}
    for pool, pattern in ((sorted(set(range(N_CONCEPTS)) - held_out), _IN_DISTRIBUTION_PATTERN), (sorted(held_out), _HOLDOUT_PATTERN)):
        ordered = [(concept_id, copy) for concept_id in pool for copy in rng.permutation(recipe.models_per_concept)]
        splits.update({pair: pattern[position % len(pattern)] for position, pair in enumerate(ordered)})
    plans = []
    low_lr, high_lr = recipe.lora_lr
    for pair in sorted(pairs, key=number_of.get):
        lr = math.exp(rng.uniform(math.log(low_lr), math.log(high_lr)))
        plans.append(
            LoraPlan(
                number=number_of[pair],
                concept_id=pair[0],
                split=splits[pair],
                seed=int(rng.integers(2**31)),
                lr=float(f"{lr:.3g}"),
                steps=int(rng.integers(recipe.lora_steps[0], recipe.lora_steps[1] + 1)),
                template=PROMPT_TEMPLATES[int(rng.integers(len(PROMPT_TEMPLATES)))],
                n_images=int(rng.integers(recipe.images_per_model[0], recipe.images_per_model[1] + 1)),
            )
        )
    return plans


class PromptTable:
    """Token embeddings of every caption the build uses: each template x each concept, then the empty caption."""

    def __init__(self, encoder: TextEncoder):
        self.prompts = [template.format(name) for name in concept_names() for template in PROMPT_TEMPLATES] + [""]
        self.index = {prompt: i for i, prompt in enumerate(self.prompts)}
        self.tokens, self.mask = encoder.encode_tokens(self.prompts)  # [P, L, 384], [P, L]

    @property
    def null(self) -> int:
        return len(self.prompts) - 1

    def of_concepts(self, concept_ids: torch.Tensor, template_ids: torch.Tensor) -> torch.Tensor:
        """Row numbers of the captions for concept ids [B] with template ids [B]."""
        return concept_ids * len(PROMPT_TEMPLATES) + template_ids


# -- the root ----------------------------------------------------------------------------------


def pretrain_root(
    prompts: PromptTable, recipe: GenerativeRecipe, seed: int, progress: Progress | None = None, progress_offset: int = 0, progress_total: int = 0
) -> MiniUNet:
    """The root: the mini U-Net trained by flow matching on all 64 concepts, 10% empty captions."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 1)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the global generator alone
        torch.manual_seed(seed)
        unet = MiniUNet(UNetConfig(context_dim=prompts.tokens.shape[-1]))
    optimizer = torch.optim.Adam(unet.parameters(), lr=recipe.pretrain_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / recipe.pretrain_steps)))
    )
    batch = recipe.pretrain_batch
    unet.train()
    for step in range(recipe.pretrain_steps):
        concept_ids = torch.randint(N_CONCEPTS, (batch,), generator=generator)
        template_ids = torch.randint(len(PROMPT_TEMPLATES), (batch,), generator=generator)
        rows = prompts.of_concepts(concept_ids, template_ids)
        rows = torch.where(torch.rand(batch, generator=generator) < CAPTION_DROPOUT, prompts.null, rows)
        images = _quantize(render(concept_ids, generator))
        loss = flow_matching_loss(unet, images, prompts.tokens[rows], prompts.mask[rows], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if progress is not None and (step % 25 == 0 or step == recipe.pretrain_steps - 1):
            progress(progress_offset + step + 1, progress_total, f"pre-training the root: loss {loss.item():.3f}")
    return unet.eval().requires_grad_(False)


# -- the LoRA zoo ------------------------------------------------------------------------------


def train_lora_batch(
    unet: MiniUNet, prompts: PromptTable, plans: Sequence[LoraPlan], recipe: GenerativeRecipe, seed: int, init_seed: int
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
    """Train the LoRA models of ``plans`` at once on their own images.

    Every model starts from the same LoRA initialisation (drawn from ``init_seed``), as
    fine-tunes launched with one training script and its default seed do. This is what makes
    the merged updates of a tree comparable: with a fresh random down factor per model, the
    update B @ A lies in a random subspace per model, and a layer's concept signal falls from
    0.68 to 0.27 (ProbeX, 48 concepts, down.attn.to_q; measured in benchmarks/).
    ``seed`` drives the noise, times and image picks of training.

    Returns:
        factors: projection name -> (down [M, r, in], up [M, out, r]) after training.
        images: per model, its training images as uint8 [n, 3, 16, 16].
    """
    n_models = len(plans)
    generator = torch.Generator().manual_seed(seed)
    images = [_quantize_uint8(render(torch.full((plan.n_images,), plan.concept_id), torch.Generator().manual_seed(plan.seed))) for plan in plans]
    factors = init_lora_factors(unet, n_models, recipe.rank, init_seed)
    parameters = [tensor for pair in factors.values() for tensor in pair]
    optimizer = StackedAdam(parameters, torch.tensor([plan.lr for plan in plans]))
    steps = torch.tensor([plan.steps for plan in plans])
    n_images = torch.tensor([plan.n_images for plan in plans])
    rows = torch.tensor([prompts.index[plan.prompt] for plan in plans]).repeat_interleave(recipe.images_per_step)
    context, mask = prompts.tokens[rows], prompts.mask[rows]
    own_images = torch.zeros(n_models, int(n_images.max()), *images[0].shape[1:])  # [M, n_max, 3, H, W]
    for model, model_images in enumerate(images):
        own_images[model, : len(model_images)] = model_images.float() / 255
    for step in range(int(steps.max())):
        picks = (torch.rand(n_models, recipe.images_per_step, generator=generator) * n_images[:, None]).long()  # each model's own images
        batch = own_images[torch.arange(n_models)[:, None], picks].flatten(0, 1)
        losses = flow_matching_loss(unet, batch, context, mask, generator, lora=factors, reduce_models=n_models)
        optimizer.zero_grad()
        losses.sum().backward()  # the models share no parameter: each gets its own mean loss's gradient
        optimizer.step(active=step < steps)
    return {name: (down.detach(), up.detach()) for name, (down, up) in factors.items()}, images


def _quantize_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def _quantize(images: torch.Tensor) -> torch.Tensor:
    """Images as they would be after a round trip through 8-bit PNG."""
    return _quantize_uint8(images).float() / 255


# -- writing -----------------------------------------------------------------------------------


def lora_state_dict(factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]], model: int, projections: Sequence[str]) -> dict[str, torch.Tensor]:
    """One model's factors as diffusers keys, fp16: ``unet.down.attn.to_q.lora.down.weight`` ..."""
    tensors = {}
    for name, (down, up) in factors.items():
        if name.rpartition(".")[2] in projections:
            tensors[f"unet.{name}.lora.down.weight"] = down[model].to(torch.float16)
            tensors[f"unet.{name}.lora.up.weight"] = up[model].to(torch.float16)
    return tensors


def file_metadata_of(plan: LoraPlan, recipe: GenerativeRecipe, init_seed: int) -> dict[str, object]:
    """What a LoRA model's metadata says besides id, split, tree and labels (JSON values)."""
    return {
        "concept": concept(plan.concept_id).name,
        "concept_id": plan.concept_id,
        "base_model": TREE,
        "text_encoder": TEXT_ENCODER,
        "lr": plan.lr,
        "steps": plan.steps,
        "rank": recipe.rank,
        "template": plan.template,
        "prompt": plan.prompt,
        "n_images": plan.n_images,
        "seed": plan.seed,
        "lora_init_seed": init_seed,
    }


def _write_images(folder: Path, images: torch.Tensor) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{number:02d}.png", optimize=False)


def _write_model(out: Path, plan: LoraPlan, recipe: GenerativeRecipe, init_seed: int, tensors: dict[str, torch.Tensor], images: torch.Tensor) -> dict:
    from probex.zoo.manifest import file_metadata

    folder = out / plan.folder
    folder.mkdir(parents=True, exist_ok=True)
    name = concept(plan.concept_id).name
    model_id = f"{TREE}/model_idx_{plan.number:04d}"
    metadata = file_metadata_of(plan, recipe, init_seed)
    strings = file_metadata(id=model_id, split=plan.split, tree=TREE, labels=[name], metadata=metadata)
    write_safetensors(folder / LORA_WEIGHTS, tensors, strings)
    _write_images(folder / IMAGES_FOLDER, images)
    return {"id": model_id, "split": plan.split, "tree": TREE, "labels": [name], "metadata": metadata, "folder": plan.folder}


# -- the build ---------------------------------------------------------------------------------


def lora_chunks(recipe: GenerativeRecipe, seed: int) -> list[list[LoraPlan]]:
    """The LoRA models in the groups that train together (``models_at_once``, similar step counts).

    A chunk's training depends only on the root, the recipe, the seed and its number, so chunks can
    be trained in any order and in any process (:class:`ChunkShare`) and give the same files.
    """
    by_steps = sorted(plan_lora_models(recipe, seed), key=lambda plan: (plan.steps, plan.number))
    return [by_steps[start : start + recipe.models_at_once] for start in range(0, len(by_steps), recipe.models_at_once)]


def train_chunk(tmp: Path, unet: MiniUNet, prompts: PromptTable, recipe: GenerativeRecipe, seed: int, number: int,
                chunk: Sequence[LoraPlan]) -> list[dict]:
    """Train ``chunk``, number ``number`` of :func:`lora_chunks`, and write its models into the tree's folder ``tmp``.

    Returns each model's entry (with its ``folder`` relative to the tree).
    """
    factors, images = train_lora_batch(unet, prompts, chunk, recipe, seed=seed * 1_000_003 + 1000 + number, init_seed=seed)
    return [_write_model(tmp, plan, recipe, seed, lora_state_dict(factors, position, recipe.saved_projections), images[position])
            for position, plan in enumerate(chunk)]


class ChunkShare:
    """How a build shares out the LoRA chunks: this one keeps them all in the process building the tree.

    :mod:`probex.jungle.build` passes another, which lets a second process take chunks off a queue once
    the root is written (:class:`ChunkTrainer` trains them there).
    """

    def offer(self, tmp: Path, n_chunks: int) -> None:
        """The root is written into ``tmp/root``: the chunks ``0 .. n_chunks - 1`` may be taken."""

    def interlude(self) -> None:
        """Other work of this process, done before it takes chunks (and timed apart from the tree)."""

    def taken(self, n_chunks: int) -> Iterable[int]:
        """The chunk numbers this process trains."""
        return range(n_chunks)

    def collect(self) -> list[dict]:
        """The entries of the chunks trained elsewhere, once they are all written."""
        return []


class ChunkTrainer:
    """Trains chunks of a generative tree whose root another process wrote into ``tmp/root``."""

    def __init__(self, tmp: str | os.PathLike, size: str, seed: int):
        self.tmp, self.recipe, self.seed = Path(tmp), RECIPES[size], seed
        self.unet = load_root(self.tmp / ROOT_FOLDER)[0].requires_grad_(False)
        self.prompts = PromptTable(load_text_encoder(TEXT_ENCODER, device="cpu"))
        self.chunks = lora_chunks(self.recipe, seed)

    def train(self, number: int) -> list[dict]:
        return train_chunk(self.tmp, self.unet, self.prompts, self.recipe, self.seed, number, self.chunks[number])


def build_generative(
    out_dir: str | os.PathLike,
    size: str = "full",
    seed: int = 0,
    progress: Progress | None = None,
    root_path: str | os.PathLike | None = None,
    recipe: GenerativeRecipe | None = None,
    threads: int | None = 1,
    share: ChunkShare | None = None,
) -> list[dict]:
    """Build the generative tree into ``out_dir`` (replaced as a whole) and return its manifest entries.

    Args:
        out_dir: the tree's folder, ``JUNGLE_ROOT/generative``: entry paths are relative to its parent.
        size: ``"full"`` (25 models per concept, 1,600 in all) or ``"small"`` (for tests).
        seed: the same seed gives the same files, byte for byte (on one machine and torch version).
        progress: ``progress(done, total, message)``.
        root_path: a root folder written by an earlier build (``out_dir/root``): skips pre-training.
        recipe: overrides the size's recipe (e.g. ``replace(RECIPES["full"], models_per_concept=8)``).
        threads: torch CPU threads during the build (restored afterwards); None keeps torch's
            setting. The networks are so small that one thread is about as fast, is much faster
            on a busy machine, and makes the bytes independent of the core count.
        share: lets other processes train some of the LoRA chunks (:class:`ChunkShare`; the size's
            own recipe only); by default this process trains them all.

    Returns:
        one entry per model in the format of :mod:`probex.zoo.manifest` (id, path, split, tree,
        labels, metadata, images).
    """
    if size not in RECIPES:
        raise ProbeXError(f"unknown size {size!r}; sizes: {', '.join(RECIPES)}")
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _build(Path(out_dir), size, recipe or RECIPES[size], seed, progress, root_path, share or ChunkShare())
    finally:
        torch.set_num_threads(saved_threads)


def _build(out_dir: Path, size: str, recipe: GenerativeRecipe, seed: int, progress: Progress | None, root_path,
           share: ChunkShare) -> list[dict]:
    chunks = lora_chunks(recipe, seed)
    n_models = sum(map(len, chunks))
    total = (0 if root_path else recipe.pretrain_steps) + n_models
    started = time.perf_counter()
    encoder = load_text_encoder(TEXT_ENCODER, device="cpu")
    prompts = PromptTable(encoder)
    if root_path is not None:
        unet, root_info = load_root(root_path)
        unet.requires_grad_(False)  # as a pre-trained root is: only the LoRA factors get gradients
        root_seconds = None
    else:
        unet = pretrain_root(prompts, recipe, seed, progress, 0, total)
        root_info = {"name": TREE, "text_encoder": TEXT_ENCODER, "pretrain_steps": recipe.pretrain_steps,
                     "pretrain_batch": recipe.pretrain_batch, "seed": seed, "concepts": N_CONCEPTS}
        root_seconds = time.perf_counter() - started
    done = total - n_models
    entries: list[dict] = []
    built_before_markers = lambda folder: json_field(folder / BUILD_INFO, "tree") == TREE  # noqa: E731
    with atomic_directory(out_dir, "probex-jungle-generative", legacy=built_before_markers) as tmp:
        save_root(unet, tmp / ROOT_FOLDER, root_info)
        share.offer(tmp, len(chunks))
        share.interlude()
        lora_started = time.perf_counter()
        for number in share.taken(len(chunks)):
            entries += train_chunk(tmp, unet, prompts, recipe, seed, number, chunks[number])
            done += len(chunks[number])
            if progress is not None:
                progress(done, total, f"LoRA models {done - (total - n_models)}/{n_models}")
        entries += share.collect()
        lora_seconds = time.perf_counter() - lora_started
        atomic_write_json(tmp / BUILD_INFO, {
            "tree": TREE, "seed": seed, "size": size, "recipe": asdict(recipe),
            "held_out_concepts": [concept(i).name for i in held_out_concepts(seed)],
            "lora_targets_saved": [name for name in lora_targets(recipe.saved_projections)],
        })
    logger.info("generative tree: %d LoRA models in %.0f s (root %s)", n_models, lora_seconds,
                f"pre-trained in {root_seconds:.0f} s" if root_seconds is not None else f"loaded from {root_path}")
    prefix = out_dir.name
    manifest = []
    for entry in sorted(entries, key=lambda entry: entry["id"]):
        folder = f"{prefix}/{entry.pop('folder')}"
        manifest.append({**entry, "path": f"{folder}/{LORA_WEIGHTS}", "images": f"{folder}/{IMAGES_FOLDER}"})
    return manifest


# -- looking at what a root or a LoRA model draws --------------------------------------------


def generate_images(
    unet: MiniUNet,
    prompts: Sequence[str],
    encoder: TextEncoder | None = None,
    seed: int = 0,
    steps: int = 24,
    guidance: float = 3.0,
    lora: Mapping[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Images [n, 3, 16, 16] in [0, 1], one per prompt, from the root (or the root plus one LoRA state dict)."""
    encoder = encoder or load_text_encoder(TEXT_ENCODER, device="cpu")
    context, mask = encoder.encode_tokens(list(prompts))
    null_context, null_mask = encoder.encode_tokens([""])
    factors = None
    if lora is not None:
        factors = {}
        for key, down in lora.items():
            if key.endswith(".lora.down.weight"):
                name = key.removeprefix("unet.").removesuffix(".lora.down.weight")
                up = lora[key.replace(".lora.down.weight", ".lora.up.weight")]
                factors[name] = (down.float()[None], up.float()[None])
    return sample(unet, context, mask, null_context, null_mask, torch.Generator().manual_seed(seed), steps, guidance, factors)
