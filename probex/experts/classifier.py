"""Experts that learn from model weights, with the scikit-learn contract.

``ProbeXClassifier`` (the paper's expert) and ``DenseExpert`` (its dense baseline) predict the
classes a model was fine-tuned on (multi-label, the paper's task) or one class per model::

    expert = ProbeXClassifier(n_probes=64).fit(X_train, y_train, val=(X_val, y_val))
    expert.predict(X_test); expert.score(X_test, y_test)
    expert.save("experts/tree-A")   # probex.load_expert("experts/tree-A") reads it back

X is one layer per model [N, d_W, d_H] (tensor, array or LayerBank) or a list of such layers;
hyperparameters are stored unchanged by ``__init__`` and learned state ends with ``_``.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from probex.errors import ProbeXError
from probex.experiments.metrics import accuracy, mean_binary_accuracy
from probex.estimator import instance_of, integer, one_of
from probex.experts.base import TRAINING_RULES, BaseExpert
from probex.experts.inputs import LayerInput, as_layers, check_layer_shapes, labels_of
from probex.experts.labels import MULTILABEL, TargetEncoding
from probex.experts.nn import ACTIVATIONS, DenseNetwork, LayersNetwork
from probex.experts.views import VIEWS_RULE, ScaledSizesState, probex_network
from probex.experts.training import EpochLog, ProgressCallback, predict_in_batches, resolve_device, seeded, train_network
from probex.zoo.stack import MatrixStack


class _Classifier(BaseExpert):
    """Predictions from logits, shared by every classifier (networks and gradient-boosted trees alike).

    A subclass gives ``_layers(X)`` (the checked input of a fitted expert) and
    ``_logits(layers)`` (raw outputs [N, C] on the CPU); the answers come in the form of the
    labels given to fit.
    """

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "targets_")

    @abstractmethod
    def _layers(self, X: LayerInput) -> list[torch.Tensor]:
        """X as this fitted expert reads it, checked (NotFittedError before fit)."""

    @abstractmethod
    def _logits(self, layers: list[torch.Tensor]) -> torch.Tensor:
        """Raw outputs [N, C] on the CPU."""

    def decision_function(self, X: LayerInput) -> np.ndarray:
        """Raw outputs (logits) [N, C]."""
        return self._logits(self._layers(X)).numpy()

    def predict_proba(self, X: LayerInput) -> np.ndarray:
        """Per-class probabilities [N, C]: independent sigmoids (multi-label) or a softmax."""
        logits = self._logits(self._layers(X))
        if self.targets_.kind == MULTILABEL:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X: LayerInput) -> Any:
        """Predicted labels, in the form of the labels given to fit."""
        logits = self._logits(self._layers(X))
        return self.targets_.decode(logits)

    def score(self, X: LayerInput, y: Any = None) -> float:
        """Mean binary accuracy (multi-label; chance 0.5) or accuracy (one class per model)."""
        layers = self._layers(X)
        y = labels_of(X) if y is None else y
        target = self.targets_.encode(y, layers[0].shape[0], "y")
        logits = self._logits(layers)
        if self.targets_.kind == MULTILABEL:
            return _score_outputs_multilabel(logits, target)
        return _score_outputs_multiclass(logits, target)


#: the hyperparameters of a ProbeX encoder (classifier and aligner alike)
PROBEX_RULES = {  # sizes: None scales them to the layer (probex.experts.nn.default_sizes)
    "n_probes": integer(low=1, optional=True),
    "proj_dim": integer(low=1, optional=True),
    "rep_dim": integer(low=1, optional=True),
    "activation": one_of(*ACTIVATIONS),
    "encoder_depth": integer(low=1),
    "views": VIEWS_RULE,
}
#: ``classes``: the names of an indicator's columns
CLASSES_RULE = {"classes": instance_of(list, tuple, np.ndarray, optional=True, expected="a list of class names")}


class _NetworkClassifier(_Classifier):
    """A torch network trained with BCE (multi-label) or cross-entropy (one class per model)."""

    @abstractmethod
    def _build_network(self, layer_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> LayersNetwork:
        """A fresh network for layers of these shapes and ``out_dim`` outputs (``saved``: what
        :meth:`_saved_build_args` read from a saved state, when loading)."""

    def _saved_build_args(self, state: dict) -> dict:
        """Extra arguments of ``_build_network`` that rebuild a saved network as it was (none by default)."""
        return {}

    # -- fitting -----------------------------------------------------------------------
    def fit(
        self,
        X: LayerInput,
        y: Any = None,
        val: Optional[tuple[LayerInput, Any]] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> "_NetworkClassifier":
        """Train on X [N, d_W, d_H] (or a list of layers) and labels y; returns self.

        y may be omitted when X is a LayerBank (its ``labels`` are used). With ``val`` the
        weights of the epoch with the best validation score are kept.
        """
        self._check_params()
        layers = as_layers(X, "X")
        y = labels_of(X) if y is None else y
        if y is None:
            raise ProbeXError("y: labels are required (X carries none)")
        targets = TargetEncoding.from_labels(y, getattr(self, "classes", None))
        target = targets.encode(y, layers[0].shape[0], "y")
        val_data = None
        if val is not None:
            val_layers = as_layers(val[0], "val X")
            check_layer_shapes(val_layers, [tuple(t.shape[1:]) for t in layers], "val X")
            val_y = labels_of(val[0]) if val[1] is None else val[1]
            val_data = (val_layers, targets.encode(val_y, val_layers[0].shape[0], "val y"))
        device = resolve_device(self.device)
        shapes = [tuple(int(s) for s in stack.shape[1:]) for stack in layers]
        with seeded(self.seed):
            network = self._build_network(shapes, targets.n_outputs)
        network.fit_normalization(layers)
        multilabel = targets.kind == MULTILABEL
        result = train_network(
            network,
            layers,
            target,
            nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss(),
            val=val_data,
            score_fn=_score_outputs_multilabel if multilabel else _score_outputs_multiclass,
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
        self.targets_ = targets
        self.classes_ = list(targets.classes)
        self.layer_shapes_ = shapes
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_parameters_ = network.n_parameters()
        self._remember_layers(X)
        return self

    # -- predicting --------------------------------------------------------------------
    def _layers(self, X: LayerInput) -> list[MatrixStack]:
        self._check_fitted()
        layers = as_layers(X, "X")
        check_layer_shapes(layers, self.layer_shapes_, "X")
        return layers

    def _logits(self, layers: list[MatrixStack]) -> torch.Tensor:
        device = next(self.network_.parameters()).device
        return predict_in_batches(self.network_, layers, device)

    def encode(self, X: LayerInput) -> np.ndarray:
        """The model representations e (concatenated over layers) [N, sum r_T]."""
        layers = self._layers(X)
        device = next(self.network_.parameters()).device
        return predict_in_batches(_Encoder(self.network_), layers, device).numpy()

    # -- persistence -------------------------------------------------------------------
    def _state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        state = {
            "targets": self.targets_.to_config(),
            "layer_shapes": [list(s) for s in self.layer_shapes_],
            "best_epoch": self.best_epoch_,
            "n_parameters": self.n_parameters_,
            "history": [vars(log) for log in self.history_],
        }
        return state, dict(self.network_.state_dict())

    def _restore(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.targets_ = TargetEncoding.from_config(state["targets"])
        self.classes_ = list(self.targets_.classes)
        self.layer_shapes_ = [tuple(s) for s in state["layer_shapes"]]
        network = self._build_network(self.layer_shapes_, self.targets_.n_outputs, **self._saved_build_args(state))
        network.load_state_dict(tensors)
        network.to(resolve_device(self.device)).eval()
        self.network_ = network
        self.best_epoch_ = state["best_epoch"]
        self.n_parameters_ = state["n_parameters"]
        self.history_ = [EpochLog(**log) for log in state.get("history", [])]


class _Encoder(nn.Module):
    """A network's encoder side only (forward = encode), for batched prediction."""

    def __init__(self, network: LayersNetwork):
        super().__init__()
        self.network = network

    def forward(self, layers: list[Any]) -> torch.Tensor:
        return self.network.encode(layers)


def _score_outputs_multilabel(logits: torch.Tensor, target: torch.Tensor) -> float:
    return mean_binary_accuracy(target.cpu().numpy(), (logits > 0).cpu().numpy())


def _score_outputs_multiclass(logits: torch.Tensor, target: torch.Tensor) -> float:
    return accuracy(target.cpu().numpy(), logits.argmax(dim=1).cpu().numpy())


class ProbeXClassifier(ScaledSizesState, _NetworkClassifier):
    """ProbeX: learned probes through the weight matrix, then a linear head over the classes.

    Args:
        n_probes, proj_dim, rep_dim: r_U, r_V, r_T (default None: scaled to each layer by
            :func:`probex.experts.nn.default_sizes`, at most 128; given sizes are clipped to the layer).
            Multi-view probes take the same default size for every view, clipped per view
            (:mod:`probex.experts.views`).
        activation: "relu" (default) or "none" (the linear ProbeX).
        encoder_depth: extra encoder blocks (1 = the paper's ProbeX).
        views: "xu" (default: ProbeX), or multi-view probes (:mod:`probex.experts.views`):
            "all", "first", "second", or views among xu, xxtu, xtu, xtxu joined with '+'.
        epochs, lr, weight_decay, batch_size: Adam training (paper: 500, 1e-3, 1e-5).
        patience: stop after this many epochs without a better validation score (None: never).
        classes: names of the label columns when y is an indicator matrix.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        seed: fixes initialisation and batch order (same seed, same data: same predictions).
    """

    parameter_rules = {**PROBEX_RULES, **TRAINING_RULES, **CLASSES_RULE}

    def __init__(
        self,
        n_probes: Optional[int] = None,
        proj_dim: Optional[int] = None,
        rep_dim: Optional[int] = None,
        activation: str = "relu",
        encoder_depth: int = 1,
        views: str = "xu",
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        classes: Optional[list] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.n_probes = n_probes
        self.proj_dim = proj_dim
        self.rep_dim = rep_dim
        self.activation = activation
        self.encoder_depth = encoder_depth
        self.views = views
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.classes = classes
        self.device = device
        self.seed = seed

    def _build_network(self, layer_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> LayersNetwork:
        return probex_network(
            layer_shapes,
            out_dim,
            views=self.views,
            n_probes=self.n_probes,
            proj_dim=self.proj_dim,
            rep_dim=self.rep_dim,
            activation=self.activation,
            encoder_depth=self.encoder_depth,
            **saved,
        )


class DenseExpert(_NetworkClassifier):
    """The Dense baseline: one linear layer on the flattened weights (d_W * d_H * C parameters)."""

    parameter_rules = {**TRAINING_RULES, **CLASSES_RULE}

    def __init__(
        self,
        epochs: int = 500,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 64,
        patience: Optional[int] = None,
        classes: Optional[list] = None,
        device: str = "auto",
        seed: int = 0,
    ):
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.patience = patience
        self.classes = classes
        self.device = device
        self.seed = seed

    def _build_network(self, layer_shapes: list[tuple[int, int]], out_dim: int, **saved: Any) -> DenseNetwork:
        return DenseNetwork(layer_shapes, out_dim)
