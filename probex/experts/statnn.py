"""StatNN, the paper's statistics baseline: a few numbers per weight tensor, then a small learner.

Each weight and bias tensor of a model is summarised by its mean, variance and five quantiles
(0, 25, 50, 75, 100 %), ``statnn_features``. ``StatNNClassifier`` learns from those features
with gradient-boosted trees (scikit-learn, the paper's choice for classification);
``StatNNNetworkClassifier`` with a linear layer or an MLP, trained like the other torch experts
(``StatNNAligner`` in :mod:`probex.experts.aligner` is its alignment twin). The statistics are
of the merged weights (LoRA factors merged a chunk of models at a time, never the whole bank).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from probex.errors import ProbeXError
from probex.estimator import integer, one_of
from probex.experts.base import TRAINING_RULES, BaseExpert
from probex.experts.classifier import CLASSES_RULE, _Classifier, _NetworkClassifier
from probex.experts.inputs import LayerInput, as_layers, check_layer_shapes, labels_of
from probex.experts.labels import MULTILABEL, TargetEncoding
from probex.experts.training import ProgressCallback
from probex.zoo.stack import MatrixStack, as_stack

QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
STATISTICS = ("mean", "var") + tuple(f"q{int(q * 100)}" for q in QUANTILES)
#: the learners of StatNNNetworkClassifier and StatNNAligner
NETWORK_MODELS = ("linear", "mlp")


def _tensor_statistics(stack: MatrixStack, chunk: int = 256) -> torch.Tensor:
    """[N, ...] -> [N, 7]: mean, variance and the five quantiles of each model's entries, streamed
    in chunks of at most ``chunk`` models (fewer for large layers)."""
    rows = []
    flat_size = stack.shape[1] * stack.shape[2]
    positions = torch.tensor(QUANTILES, dtype=torch.float64) * (flat_size - 1)
    low, high = positions.floor().long(), positions.ceil().long()
    weight = (positions - low).float()
    step = max(1, min(chunk, stack.chunk_rows()))
    for start in range(0, len(stack), step):
        block = stack.merged(slice(start, start + step)).reshape(-1, flat_size)
        ordered = block.sort(dim=1).values
        quantiles = ordered[:, low] * (1 - weight) + ordered[:, high] * weight  # linear interpolation
        stats = [block.mean(dim=1, keepdim=True), block.var(dim=1, unbiased=False, keepdim=True), quantiles]
        rows.append(torch.cat(stats, dim=1))
    return torch.cat(rows)


def statnn_features(tensors: LayerInput) -> torch.Tensor:
    """StatNN features [N, 7 * n_tensors] of one or several tensors per model (each [N, ...]).

    Pass every weight and bias tensor of the models (a list of tensors or LayerBanks) for the
    paper's StatNN; the columns are ordered tensor by tensor, ``STATISTICS`` within each.
    """
    layers = as_layers(tensors, "tensors")
    return torch.cat([_tensor_statistics(t) for t in layers], dim=1)


def _feature_column(X: LayerInput, name: str, input_shapes: Optional[list[tuple]] = None) -> torch.Tensor:
    """[N, n_features, 1]: the features as a one-column 'layer' for the shared machinery.

    With ``input_shapes`` (those seen in fit), the tensors' per-model shapes must match them.
    """
    layers = as_layers(X, name)
    if input_shapes is not None:
        check_layer_shapes(layers, input_shapes, name)
    return torch.cat([_tensor_statistics(t) for t in layers], dim=1)[:, :, None]


class StatNNNetwork(nn.Module):
    """Standardised StatNN features -> a linear layer or a one-hidden-layer MLP."""

    def __init__(self, n_features: int, out_dim: int, hidden: Optional[int]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        if hidden:
            self.body = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU())
            self.head = nn.Linear(hidden, out_dim)
        else:
            self.body = nn.Identity()
            self.head = nn.Linear(n_features, out_dim)

    def fit_normalization(self, layers: Sequence[MatrixStack | torch.Tensor]) -> None:
        features = as_stack(layers[0]).take()[:, :, 0]
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(features.std(dim=0, unbiased=False).clamp_min(1e-8))

    def encode(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.body((layers[0][:, :, 0] - self.mean) / self.std)

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head(self.encode(layers))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class StatNNClassifier(_Classifier):
    """StatNN: predicts training classes from per-tensor weight statistics with gradient-boosted trees.

    The paper's StatNN classifier: scikit-learn's HistGradientBoostingClassifier on
    ``statnn_features``, one per class for multi-label targets. (For a linear layer or an MLP on
    the same features, see StatNNNetworkClassifier.)

    Args:
        max_iter: boosting iterations.
        classes: names of the label columns when y is an indicator matrix.
        seed: the boosting's random state.

    X is the tensors of each model: one [N, ...] tensor / LayerBank, or a list of them (all
    weight and bias tensors for the paper's baseline).
    """

    parameter_rules = {"max_iter": integer(low=1), **CLASSES_RULE, "seed": TRAINING_RULES["seed"]}

    def __init__(self, max_iter: int = 100, classes: Optional[list] = None, seed: int = 0):
        self.max_iter = max_iter
        self.classes = classes
        self.seed = seed

    @classmethod
    def _from_saved(cls, params: dict[str, Any]) -> BaseExpert:
        """Experts saved before the split: ``model="gbt"`` is this class, "linear"/"mlp" StatNNNetworkClassifier."""
        if "model" not in params:
            return cls(**params)
        if params["model"] == "gbt":
            return cls(**{name: params[name] for name in ("max_iter", "classes", "seed") if name in params})
        return StatNNNetworkClassifier(**{name: value for name, value in params.items() if name != "max_iter"})

    def fit(
        self,
        X: LayerInput,
        y: Any = None,
        val: Optional[tuple[LayerInput, Any]] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> "StatNNClassifier":
        """Fit the trees on X's features and labels y (a LayerBank's own when omitted); returns self.

        ``val`` and ``progress`` are accepted so every expert fits alike, and not used: boosting
        runs its ``max_iter`` iterations.
        """
        self._check_params()
        y = labels_of(X) if y is None else y
        if y is None:
            raise ProbeXError("y: labels are required (X carries none)")
        features = _feature_column(X, "X")
        targets = TargetEncoding.from_labels(y, self.classes)
        target = targets.encode(y, features.shape[0], "y")
        self.trees_ = _fit_trees(features[:, :, 0].numpy(), target.numpy(), targets.kind, self.max_iter, self.seed)
        self.input_shapes_ = [tuple(t.shape[1:]) for t in as_layers(X, "X")]
        self.train_features_ = features[:, :, 0]
        self.train_targets_ = target
        self.classes_ = list(targets.classes)
        self.n_parameters_ = None  # trees have no fixed parameter count
        self.history_ = []
        self.best_epoch_ = 0
        self._remember_layers(X)
        self.targets_ = targets  # last: the expert is fitted
        return self

    def _layers(self, X: LayerInput) -> list[torch.Tensor]:
        self._check_fitted()
        return [_feature_column(X, "X", self.input_shapes_)]

    def _logits(self, layers: list[torch.Tensor]) -> torch.Tensor:
        features = layers[0][:, :, 0].numpy()
        eps = 1e-6
        if self.targets_.kind == MULTILABEL:
            columns = [
                np.full(len(features), tree) if isinstance(tree, float) else tree.predict_proba(features)[:, 1]
                for tree in self.trees_
            ]
            probability = np.clip(np.stack(columns, axis=1), eps, 1 - eps)
            return torch.from_numpy(np.log(probability / (1 - probability))).float()
        probability = np.zeros((len(features), self.targets_.n_outputs))
        probability[:, self.trees_.classes_] = self.trees_.predict_proba(features)
        return torch.from_numpy(np.log(np.clip(probability, eps, 1.0))).float()

    def encode(self, X: LayerInput) -> np.ndarray:
        """The StatNN features [N, 7 * n_tensors] (the trees learn no representation)."""
        return self._layers(X)[0][:, :, 0].numpy()

    # The trees are stored as their training data and refitted on load: scikit-learn models
    # can only be saved by pickling, which probex never loads. Fitting is deterministic for
    # the seed, so the loaded expert predicts exactly as the saved one.
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {"targets": self.targets_.to_config(), "input_shapes": [list(s) for s in self.input_shapes_]}
        return state, {"train_features": self.train_features_, "train_targets": self.train_targets_}

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.input_shapes_ = [tuple(s) for s in state["input_shapes"]]
        targets = TargetEncoding.from_config(state["targets"])
        self.classes_ = list(targets.classes)
        self.train_features_, self.train_targets_ = tensors["train_features"], tensors["train_targets"]
        self.trees_ = _fit_trees(self.train_features_.numpy(), self.train_targets_.numpy(), targets.kind,
                                 self.max_iter, self.seed)
        self.n_parameters_ = None
        self.history_ = []
        self.best_epoch_ = 0
        self.targets_ = targets


def _fit_trees(features: np.ndarray, target: np.ndarray, kind: str, max_iter: int, seed: int) -> Any:
    """One HistGradientBoostingClassifier (one class per model), or one per class (multi-label;
    a class that is always or never present is kept as that constant probability)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    def make() -> HistGradientBoostingClassifier:
        return HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed)

    if kind == MULTILABEL:
        return [make().fit(features, column) if 0 < column.sum() < len(column) else float(column[0])
                for column in target.T]
    return make().fit(features, target)


class StatNNNetworkClassifier(_NetworkClassifier):
    """StatNN with a torch learner: per-tensor weight statistics -> a linear layer or an MLP.

    Args:
        model: "mlp" (one hidden ReLU layer) or "linear".
        hidden: the MLP's hidden size.
        Other arguments as for ProbeXClassifier.

    X is the tensors of each model: one [N, ...] tensor / LayerBank, or a list of them (all
    weight and bias tensors for the paper's baseline).
    """

    parameter_rules = {"model": one_of(*NETWORK_MODELS), "hidden": integer(low=1), **TRAINING_RULES, **CLASSES_RULE}

    def __init__(
        self,
        model: str = "mlp",
        hidden: int = 256,
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        classes: Optional[list] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.model = model
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.classes = classes
        self.device = device
        self.seed = seed

    def _build_network(self, layer_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> StatNNNetwork:
        return StatNNNetwork(layer_shapes[0][0], out_dim, self.hidden if self.model == "mlp" else None)

    def fit(
        self,
        X: LayerInput,
        y: Any = None,
        val: Optional[tuple[LayerInput, Any]] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> "StatNNNetworkClassifier":
        """Train on X's features and labels y (a LayerBank's own when omitted); returns self."""
        self._check_params()
        y = labels_of(X) if y is None else y
        input_shapes = [tuple(t.shape[1:]) for t in as_layers(X, "X")]
        features = _feature_column(X, "X")
        val_features = None
        if val is not None:
            val_y = labels_of(val[0]) if val[1] is None else val[1]
            val_features = (_feature_column(val[0], "val X", input_shapes), val_y)
        super().fit(features, y, val=val_features, progress=progress)
        self.input_shapes_ = input_shapes
        self._remember_layers(X)
        return self

    def _layers(self, X: LayerInput) -> list[torch.Tensor]:
        self._check_fitted()
        return [_feature_column(X, "X", self.input_shapes_)]

    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state, tensors = super()._state()
        state["input_shapes"] = [list(s) for s in self.input_shapes_]
        return state, tensors

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.input_shapes_ = [tuple(s) for s in state["input_shapes"]]
        super()._restore(state, tensors)
