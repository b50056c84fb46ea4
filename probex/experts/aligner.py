"""Aligned experts: model weights and class names mapped into one embedding space (CLIP-like).

A model's layer goes through an encoder (ProbeX, Dense or StatNN features) and a linear head
to ``embed_dim``; a class name goes through a frozen text encoder (``probex.language.text``) as the
prompt ``template.format(name)`` and a learned linear map to ``embed_dim``. Both sides are
L2-normalised, the logits are their cosine similarities divided by a temperature (learnable
by default), and a cross-entropy over the candidate classes trains the pair. Because the text
side is a map of any text's embedding, a model can then be matched against class names never
seen in training (zero-shot)::

    aligner = ProbeXAligner(text_encoder="minilm").fit(bank_train, val=(bank_val, None))
    aligner.zero_shot(bank_test_holdout, ["red star", "blue moon"])    # one name per model
    aligner.score(bank_test_holdout, candidates=held_out_names)          # zero-shot top-1
    aligner.encode(bank_test)                                            # [N, embed_dim], unit rows
    aligner.save("experts/aligned"); load_expert("experts/aligned")

X is one layer per model [N, d_W, d_H] (tensor, array or LayerBank) or a list of layers (one
encoder per layer, concatenated before the head). ``names`` are the models' class names as
strings; when omitted they are read from a LayerBank's labels (the first label of each model).

Candidates during fit: the training classes. Validation (the best epoch is the one with the
highest validation top-1) is scored over the training classes when every validation name is
one of them, and over the validation names otherwise (held-out validation concepts select the
epoch that generalises best zero-shot).
"""

from __future__ import annotations

import logging
import math
from abc import abstractmethod
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from probex.errors import ProbeXError
from probex.estimator import Rule, boolean, integer, one_of, real
from probex.experiments.metrics import accuracy
from probex.experts.base import TRAINING_RULES, BaseExpert
from probex.experts.classifier import PROBEX_RULES
from probex.experts.inputs import LayerInput, as_layers, check_layer_shapes, labels_of
from probex.experts.nn import DenseNetwork, LayersNetwork
from probex.experts.views import ScaledSizesState, probex_network
from probex.experts.statnn import NETWORK_MODELS, StatNNNetwork, statnn_features
from probex.storage import cache_dir
from probex.language.text import DEFAULT_TEMPLATE, OPEN_CLIP_PREFIX, SUPPORTED_SPECS, TextEncoder, class_prompts, load_text_encoder
from probex.experts.training import EpochLog, ProgressCallback, predict_in_batches, resolve_device, seeded, train_network
from probex.zoo.stack import MatrixStack, as_stack

logger = logging.getLogger(__name__)

#: logits are cosine * scale; the learnable scale is clipped here (CLIP's choice).
MAX_LOGIT_SCALE = 100.0

_TRAIN_BLOCK, _VAL_BLOCK = 0, 1


def _is_text_encoder_spec(spec: Any) -> bool:
    if not isinstance(spec, str):
        return False
    model_name, slash, source = spec[len(OPEN_CLIP_PREFIX):].partition("/")
    return spec == "minilm" or (spec.startswith(OPEN_CLIP_PREFIX) and bool(model_name and slash and source))


#: the hyperparameters every aligned expert shares (besides TRAINING_RULES)
ALIGNMENT_RULES = {
    "text_encoder": Rule("a text encoder spec: " + " or ".join(repr(spec) for spec in SUPPORTED_SPECS), _is_text_encoder_spec),
    "template": Rule("a prompt with exactly one '{}' for the class name",
                     lambda template: isinstance(template, str) and template.count("{}") == 1),
    "embed_dim": integer(low=1),
    "temperature": real(low=0, low_open=True),
    "learn_temperature": boolean(),
}


def names_of(labels: Any, where: str = "names") -> list[str]:
    """One class name per model: strings as given, or the first label of each label list."""
    if labels is None:
        raise ProbeXError(f"{where}: class names are required (one string per model), and X carries no labels")
    if isinstance(labels, str):
        raise ProbeXError(f"{where}: expected one class name per model, not one string; wrap it: [{labels!r}]")
    names = []
    for index, label in enumerate(labels):
        if isinstance(label, (list, tuple)):
            if not label:
                raise ProbeXError(f"{where}[{index}]: a model with no label; give it a class name")
            label = label[0]
        if not isinstance(label, str):
            raise ProbeXError(f"{where}[{index}]: class names must be strings; got {type(label).__name__} ({label!r})")
        names.append(label)
    return names


class AlignmentNetwork(nn.Module):
    """A model-side network (encoders + head to ``embed_dim``) and the text side's linear map.

    forward(layers) -> model embeddings [N, embed_dim], unit rows;
    embed_text(text_features [C, text_dim]) -> class embeddings [C, embed_dim], unit rows;
    logits(model_embeddings, text_features) -> [N, C] = cosine * exp(logit_scale).
    """

    def __init__(self, model_side: nn.Module, text_dim: int, embed_dim: int, temperature: float, learn_temperature: bool):
        super().__init__()
        if temperature <= 0:
            raise ProbeXError(f"temperature must be > 0; got {temperature}")
        self.model_side = model_side
        self.text_map = nn.Linear(text_dim, embed_dim)
        scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    def fit_normalization(self, layers: Sequence[MatrixStack]) -> None:
        self.model_side.fit_normalization(layers)

    def forward(self, layers: Sequence[Any]) -> torch.Tensor:
        return F.normalize(self.model_side(layers), dim=-1)

    def embed_text(self, text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_map(text_features), dim=-1)

    def logits(self, model_embeddings: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        scale = self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
        return scale * model_embeddings @ self.embed_text(text_features).T

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _AlignmentObjective:
    """Cross-entropy and top-1 over the candidates of a target's block (training or validation).

    Targets are [N, 2] long tensors: (block, class index within the block's candidates); a
    batch never mixes blocks, since train_network batches the two sets separately.
    """

    def __init__(self, network: AlignmentNetwork, blocks: Sequence[torch.Tensor]):
        self.network = network
        self.blocks = list(blocks)

    def _logits(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        block = self.blocks[int(targets[0, 0])].to(embeddings.device)
        return self.network.logits(embeddings, block)

    def loss(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(self.network.training and torch.is_grad_enabled()):  # validation: no graph
            return F.cross_entropy(self._logits(embeddings, targets), targets[:, 1])

    def score(self, embeddings: torch.Tensor, targets: torch.Tensor) -> float:
        predicted = self._logits(embeddings, targets).argmax(dim=1)
        return float((predicted == targets[:, 1]).float().mean())


class _NetworkAligner(BaseExpert):
    """The alignment machinery shared by every aligned expert; subclasses give the model side."""

    @abstractmethod
    def _build_model_side(self, input_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> nn.Module:
        """A fresh model-side network (fit_normalization, forward -> [N, out_dim]) for these inputs
        (``saved``: what :meth:`_saved_build_args` read from a saved state, when loading)."""

    def _saved_build_args(self, state: dict) -> dict:
        """Extra arguments of ``_build_model_side`` that rebuild a saved network as it was (none by default)."""
        return {}

    def _inputs(self, X: LayerInput, name: str) -> list[MatrixStack]:
        """What the model side reads: by default the layers themselves."""
        return as_layers(X, name)

    _fit_hint = "call fit(X, names) first, or load a saved expert with load_expert"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "network_")

    # -- the text side -----------------------------------------------------------------
    def _encoder(self) -> TextEncoder:
        """The text encoder: the one fitted with once fitted (a later set_params cannot swap it under the network)."""
        encoder = getattr(self, "text_encoder_", None)
        if encoder is None or (not hasattr(self, "network_") and encoder.spec != self.text_encoder):
            encoder = load_text_encoder(self.text_encoder, device=self.device, cache_dir=cache_dir("text"))
            self.text_encoder_ = encoder
        return encoder

    def _text_features(self, names: Sequence[str]) -> torch.Tensor:
        """The frozen text encoder's embeddings of the class prompts [C, text_dim]."""
        return self._encoder().encode(class_prompts(list(names), self.template))

    def _build_network(self, input_shapes: list[tuple[int, int]], text_dim: int, **saved: Any) -> AlignmentNetwork:
        return AlignmentNetwork(
            self._build_model_side(input_shapes, self.embed_dim, **saved),
            text_dim,
            self.embed_dim,
            self.temperature,
            self.learn_temperature,
        )

    # -- fitting -----------------------------------------------------------------------
    def fit(
        self,
        X: LayerInput,
        names: Optional[Sequence[str]] = None,
        val: Optional[tuple[LayerInput, Optional[Sequence[str]]]] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> "_NetworkAligner":
        """Train on X (one layer or a list of layers) and one class name per model; returns self.

        ``names`` may be omitted when X is a LayerBank (the first label of each model is used);
        so may the names of ``val = (X_val, names_val)``. With ``val`` the epoch with the best
        validation top-1 is kept (see the module docstring for its candidates).
        """
        self._check_params()
        self.__dict__.pop("network_", None)
        layers = self._inputs(X, "X")
        names = names_of(labels_of(X) if names is None else names, "names")
        if len(names) != layers[0].shape[0]:
            raise ProbeXError(f"names: expected one class name per model ({layers[0].shape[0]}); got {len(names)}")
        classes = sorted(set(names))
        if len(classes) < 2:
            raise ProbeXError(f"names: alignment needs at least 2 classes to contrast; got {classes}")
        index = {name: i for i, name in enumerate(classes)}
        targets = _block_targets(_TRAIN_BLOCK, [index[name] for name in names])
        blocks = [self._text_features(classes)]
        val_data = None
        if val is not None:
            val_layers = self._inputs(val[0], "val X")
            check_layer_shapes(val_layers, [tuple(t.shape[1:]) for t in layers], "val X")
            val_names = names_of(labels_of(val[0]) if val[1] is None else val[1], "val names")
            if len(val_names) != val_layers[0].shape[0]:
                raise ProbeXError(f"val names: expected one class name per model ({val_layers[0].shape[0]}); got {len(val_names)}")
            val_classes = classes if set(val_names) <= index.keys() else sorted(set(val_names))
            val_index = {name: i for i, name in enumerate(val_classes)}
            val_data = (val_layers, _block_targets(_VAL_BLOCK, [val_index[name] for name in val_names]))
            blocks.append(self._text_features(val_classes))
        device = resolve_device(self.device)
        shapes = [tuple(int(s) for s in t.shape[1:]) for t in layers]
        with seeded(self.seed):
            network = self._build_network(shapes, blocks[0].shape[1])
        network.fit_normalization(layers)
        objective = _AlignmentObjective(network, blocks)
        result = train_network(
            network,
            layers,
            targets,
            objective.loss,
            val=val_data,
            score_fn=objective.score,
            epochs=self.epochs,
            lr=self.lr,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            patience=self.patience,
            device=device,
            seed=self.seed,
            progress=progress,
        )
        self.network_ = network
        self.classes_ = classes
        self.input_shapes_ = shapes
        self.text_dim_ = int(blocks[0].shape[1])
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_parameters_ = network.n_parameters()
        self._remember_layers(X)
        logger.info("%s: %d models of %d classes, best epoch %d of %d (val top-1 %s)", type(self).__name__, len(names),
                    len(classes), result.best_epoch, len(result.history), result.best_score)
        return self

    # -- the shared space ----------------------------------------------------------------
    def _inputs_checked(self, X: LayerInput) -> list[MatrixStack]:
        self._check_fitted()
        inputs = self._inputs(X, "X")
        check_layer_shapes(inputs, self.input_shapes_, "X")
        return inputs

    def _device(self) -> torch.device:
        return next(self.network_.parameters()).device

    def _encode(self, X: LayerInput) -> torch.Tensor:
        inputs = self._inputs_checked(X)
        return predict_in_batches(self.network_, inputs, self._device())

    def encode(self, X: LayerInput) -> np.ndarray:
        """Model embeddings in the shared space [N, embed_dim], unit rows."""
        return self._encode(X).numpy()

    @torch.no_grad()
    def _encode_text(self, names: Sequence[str]) -> torch.Tensor:
        self._check_fitted()
        names = _check_candidates(names)
        features = self._text_features(names).to(self._device())
        return self.network_.embed_text(features).float().cpu()

    def encode_text(self, names: Sequence[str]) -> np.ndarray:
        """Class names (through the prompt template) in the shared space [C, embed_dim], unit rows."""
        return self._encode_text(names).numpy()

    def zero_shot_scores(self, X: LayerInput, candidates: Optional[Sequence[str]] = None) -> np.ndarray:
        """Cosine similarity of every model to every candidate class name [N, C] (default: the training classes)."""
        self._check_fitted()
        candidates = self.classes_ if candidates is None else candidates
        return (self._encode(X) @ self._encode_text(candidates).T).numpy()

    def zero_shot(self, X: LayerInput, candidates: Optional[Sequence[str]] = None) -> list[str]:
        """The best-matching candidate class name for every model (default candidates: the training classes)."""
        self._check_fitted()
        candidates = list(self.classes_ if candidates is None else candidates)
        scores = self.zero_shot_scores(X, candidates)
        return [candidates[i] for i in scores.argmax(axis=1)]

    def predict(self, X: LayerInput) -> list[str]:
        """The best-matching training class for every model (in-distribution prediction)."""
        return self.zero_shot(X)

    def score(self, X: LayerInput, names: Optional[Sequence[str]] = None, candidates: Optional[Sequence[str]] = None) -> float:
        """Top-1 accuracy over ``candidates`` (default: the training classes; pass held-out names for zero-shot)."""
        self._check_fitted()
        candidates = list(self.classes_ if candidates is None else candidates)
        names = names_of(labels_of(X) if names is None else names, "names")
        missing = sorted(set(names) - set(candidates))
        if missing:
            raise ProbeXError(f"names: {len(missing)} true class(es) are not among the candidates, e.g. {missing[:3]}; add them to candidates")
        predicted = self.zero_shot(X, candidates)
        if len(predicted) != len(names):
            raise ProbeXError(f"names: expected one class name per model ({len(predicted)}); got {len(names)}")
        return accuracy(np.asarray(names), np.asarray(predicted))

    @property
    def temperature_(self) -> float:
        """The temperature reached in training (1 / the logit scale)."""
        self._check_fitted()
        return float(1.0 / self.network_.logit_scale.detach().clamp(max=math.log(MAX_LOGIT_SCALE)).exp())

    # -- persistence -------------------------------------------------------------------
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {
            "text_encoder": self._encoder().spec,
            "text_dim": self.text_dim_,
            "classes": list(self.classes_),
            "input_shapes": [list(s) for s in self.input_shapes_],
            "best_epoch": self.best_epoch_,
            "n_parameters": self.n_parameters_,
            "history": [vars(log) for log in self.history_],
        }
        return state, dict(self.network_.state_dict())

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.text_encoder = state["text_encoder"]
        self.text_dim_ = int(state["text_dim"])
        self.classes_ = list(state["classes"])
        self.input_shapes_ = [tuple(s) for s in state["input_shapes"]]
        network = self._build_network(self.input_shapes_, self.text_dim_, **self._saved_build_args(state))
        network.load_state_dict(tensors)
        network.to(resolve_device(self.device)).eval()
        self.network_ = network
        self.best_epoch_ = state["best_epoch"]
        self.n_parameters_ = state["n_parameters"]
        self.history_ = [EpochLog(**log) for log in state.get("history", [])]
        encoder = self._encoder()  # the same text encoder it was trained with, loaded now
        if encoder.dim != self.text_dim_:
            raise ProbeXError(
                f"text encoder {self.text_encoder!r} gives {encoder.dim}-dimensional embeddings, "
                f"but this aligner was trained on {self.text_dim_}"
            )


def _block_targets(block: int, indices: list[int]) -> torch.Tensor:
    targets = torch.empty(len(indices), 2, dtype=torch.long)
    targets[:, 0] = block
    targets[:, 1] = torch.tensor(indices, dtype=torch.long)
    return targets


def _check_candidates(names: Sequence[str]) -> list[str]:
    names = names_of(names, "candidates")
    if not names:
        raise ProbeXError("candidates: expected at least one class name")
    return names


_SHARED_DOC = """
    Shared arguments:
        text_encoder: a ``load_text_encoder`` spec ("minilm", "open_clip:ViT-L-14/openai", ...);
            saved with the expert and loaded again with it.
        template: the prompt for a class name (one ``{}``).
        embed_dim: the shared space's size.
        temperature: the initial (or, with learn_temperature=False, fixed) softmax temperature.
        learn_temperature: learn the temperature (CLIP-like) or keep it fixed.
        epochs, lr, weight_decay, batch_size: Adam training (paper: 500, 1e-3, 1e-5).
        patience: stop after this many epochs without a better validation top-1 (None: never).
        device: "auto" (CUDA when present), "cpu" or "cuda".
        seed: fixes initialisation and batch order.
"""


class ProbeXAligner(ScaledSizesState, _NetworkAligner):
    """ProbeX aligned with a text space: the paper's zero-shot expert.

    Args:
        n_probes, proj_dim, rep_dim: r_U, r_V, r_T (default 128 each; clipped to the layer; None
            scales them to the layer as :class:`~probex.experts.classifier.ProbeXClassifier`'s default does).
        activation: "relu" (default) or "none" (the linear ProbeX: the paper's ablation).
        encoder_depth: extra encoder blocks (1 = the paper's ProbeX).
        views: "xu" (default: ProbeX), or multi-view probes (:mod:`probex.experts.views`):
            "all", "first", "second", or views among xu, xxtu, xtu, xtxu joined with '+'.
    """

    __doc__ += _SHARED_DOC
    parameter_rules = {**PROBEX_RULES, **ALIGNMENT_RULES, **TRAINING_RULES}

    def __init__(
        self,
        n_probes: int = 128,
        proj_dim: int = 128,
        rep_dim: int = 128,
        activation: str = "relu",
        encoder_depth: int = 1,
        views: str = "xu",
        text_encoder: str = "minilm",
        template: str = DEFAULT_TEMPLATE,
        embed_dim: int = 256,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.n_probes = n_probes
        self.proj_dim = proj_dim
        self.rep_dim = rep_dim
        self.activation = activation
        self.encoder_depth = encoder_depth
        self.views = views
        self.text_encoder = text_encoder
        self.template = template
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.device = device
        self.seed = seed

    def _build_model_side(self, input_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> LayersNetwork:
        return probex_network(
            input_shapes,
            out_dim,
            views=self.views,
            n_probes=self.n_probes,
            proj_dim=self.proj_dim,
            rep_dim=self.rep_dim,
            activation=self.activation,
            encoder_depth=self.encoder_depth,
            **saved,
        )


class DenseAligner(_NetworkAligner):
    """The Dense alignment baseline: one linear layer from the flattened weights to the shared space."""

    __doc__ += _SHARED_DOC
    parameter_rules = {**ALIGNMENT_RULES, **TRAINING_RULES}

    def __init__(
        self,
        text_encoder: str = "minilm",
        template: str = DEFAULT_TEMPLATE,
        embed_dim: int = 256,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.text_encoder = text_encoder
        self.template = template
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.device = device
        self.seed = seed

    def _build_model_side(self, input_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> DenseNetwork:
        return DenseNetwork(input_shapes, out_dim)


class StatNNAligner(_NetworkAligner):
    """The StatNN alignment baselines: per-tensor weight statistics -> a linear layer or an MLP.

    Args:
        model: "linear" (StatNN-Linear) or "mlp" (StatNN-MLP, one hidden ReLU layer).
        hidden: the MLP's hidden size.

    X is the tensors of each model: one [N, ...] tensor / LayerBank, or a list of them (all
    weight and bias tensors for the paper's baseline).
    """

    __doc__ += _SHARED_DOC
    parameter_rules = {"model": one_of(*NETWORK_MODELS), "hidden": integer(low=1), **ALIGNMENT_RULES, **TRAINING_RULES}

    def __init__(
        self,
        model: str = "mlp",
        hidden: int = 256,
        text_encoder: str = "minilm",
        template: str = DEFAULT_TEMPLATE,
        embed_dim: int = 256,
        temperature: float = 0.07,
        learn_temperature: bool = True,
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.model = model
        self.hidden = hidden
        self.text_encoder = text_encoder
        self.template = template
        self.embed_dim = embed_dim
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.device = device
        self.seed = seed

    def _inputs(self, X: LayerInput, name: str) -> list[MatrixStack]:
        """[N, n_features, 1]: the StatNN features as a one-column 'layer' for the shared machinery."""
        layers = as_layers(X, name)
        shapes = [list(t.shape[1:]) for t in layers]
        if hasattr(self, "tensor_shapes_") and shapes != self.tensor_shapes_:
            raise ProbeXError(f"{name}: expected tensors of per-model shapes {self.tensor_shapes_} as in fit; got {shapes}")
        return [as_stack(statnn_features(layers)[:, :, None])]

    def fit(self, X: LayerInput, names: Optional[Sequence[str]] = None, val=None, progress=None) -> "StatNNAligner":
        self._check_params()
        self.__dict__.pop("tensor_shapes_", None)
        shapes = [list(t.shape[1:]) for t in as_layers(X, "X")]
        self.tensor_shapes_ = shapes  # val tensors are checked against these
        super().fit(X, names, val=val, progress=progress)
        self._remember_layers(X)
        return self

    def _build_model_side(self, input_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> StatNNNetwork:
        return StatNNNetwork(input_shapes[0][0], out_dim, self.hidden if self.model == "mlp" else None)

    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state, tensors = super()._state()
        state["tensor_shapes"] = self.tensor_shapes_
        return state, tensors

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.tensor_shapes_ = [list(s) for s in state["tensor_shapes"]]
        super()._restore(state, tensors)
