"""Turning what users call labels into training targets and back.

Three forms are accepted, and an expert answers in the form it was fitted with:

- multi-label indicator: a 2-D array [N, C] of 0/1 (the classes are 0..C-1 unless named);
- multi-label names: a list of label lists, e.g. ``[["cat", "dog"], ["ship"]]`` (what
  ``LayerBank.labels`` holds: the classes a model was fine-tuned on);
- single label: a 1-D sequence of ints or strings, one class per model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from probex.errors import ProbeXError

MULTILABEL = "multilabel"
MULTICLASS = "multiclass"


def _is_label_list(y: Any) -> bool:
    return isinstance(y, (list, tuple)) and len(y) > 0 and all(isinstance(row, (list, tuple, set, frozenset)) for row in y)


@dataclass
class TargetEncoding:
    """How an expert's labels map to target columns.

    kind: "multilabel" (one binary output per class) or "multiclass" (one class per model).
    classes: the class of each output column, in order.
    form: "indicator", "names" or "labels": what ``predict`` returns.
    """

    kind: str
    classes: list
    form: str

    @classmethod
    def from_labels(cls, y: Any, classes: Sequence | None = None) -> "TargetEncoding":
        """Infer the encoding from training labels (``classes`` fixes the columns' names/order)."""
        if _is_label_list(y):
            found = sorted({label for row in y for label in row}, key=str)
            return cls(MULTILABEL, list(classes) if classes is not None else found, "names")
        array = np.asarray(y)
        if array.ndim == 2:
            if classes is not None and len(classes) != array.shape[1]:
                raise ProbeXError(f"y: {len(classes)} class names given for an indicator of width {array.shape[1]}")
            return cls(MULTILABEL, list(classes) if classes is not None else list(range(array.shape[1])), "indicator")
        if array.ndim == 1:
            found = sorted(set(array.tolist()), key=str)
            return cls(MULTICLASS, list(classes) if classes is not None else found, "labels")
        raise ProbeXError(
            "y: expected a multi-label indicator [N, C], a list of label lists, or one label per model; "
            f"got an array of shape {array.shape}"
        )

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    def encode(self, y: Any, n_models: int, name: str = "y") -> torch.Tensor:
        """Targets as a tensor: float [N, C] for multi-label, long [N] for single-label."""
        if self.kind == MULTILABEL:
            target = self._encode_multilabel(y, name)
        else:
            target = self._encode_multiclass(y, name)
        if target.shape[0] != n_models:
            raise ProbeXError(f"{name}: labels for {target.shape[0]} models given for {n_models} models in X")
        return target

    def _encode_multilabel(self, y: Any, name: str) -> torch.Tensor:
        if _is_label_list(y) or (isinstance(y, (list, tuple)) and len(y) == 0):
            index = {label: i for i, label in enumerate(self.classes)}
            target = torch.zeros(len(y), len(self.classes))
            for row, labels in enumerate(y):
                for label in labels:
                    if label not in index:
                        raise ProbeXError(f"{name}: unknown class {label!r}; the expert knows {len(self.classes)} classes")
                    target[row, index[label]] = 1.0
            return target
        array = np.asarray(y, dtype=np.float64) if not isinstance(y, torch.Tensor) else y.detach().cpu().double().numpy()
        if array.ndim != 2:
            raise ProbeXError(f"{name}: expected a multi-label indicator [N, {len(self.classes)}]; got shape {array.shape}")
        if array.shape[1] != len(self.classes):
            raise ProbeXError(
                f"{name}: expected {len(self.classes)} label columns (one per class, as in fit); got {array.shape[1]}"
            )
        if not np.isin(array, (0.0, 1.0)).all():
            raise ProbeXError(f"{name}: a multi-label indicator holds only 0 and 1")
        return torch.from_numpy(array).float()

    def _encode_multiclass(self, y: Any, name: str) -> torch.Tensor:
        if _is_label_list(y):
            raise ProbeXError(f"{name}: the expert was fitted with one label per model; got label lists")
        array = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y)
        if array.ndim != 1:
            raise ProbeXError(f"{name}: expected one label per model (shape [N]); got shape {array.shape}")
        index = {label: i for i, label in enumerate(self.classes)}
        try:
            return torch.tensor([index[label] for label in array.tolist()], dtype=torch.long)
        except KeyError as error:
            raise ProbeXError(f"{name}: unknown class {error.args[0]!r}; known classes: {self.classes[:10]}") from None

    def decode(self, outputs: torch.Tensor) -> Any:
        """Predictions in the form the expert was fitted with, from logits [N, C]."""
        if self.kind == MULTILABEL:
            indicator = (outputs > 0).cpu().numpy().astype(np.int64)
            if self.form == "names":
                return [[self.classes[j] for j in np.flatnonzero(row)] for row in indicator]
            return indicator
        best = outputs.argmax(dim=1).cpu().numpy()
        return np.asarray([self.classes[i] for i in best])

    def to_config(self) -> dict:
        return {"kind": self.kind, "classes": list(self.classes), "form": self.form}

    @classmethod
    def from_config(cls, config: dict) -> "TargetEncoding":
        return cls(config["kind"], list(config["classes"]), config["form"])
