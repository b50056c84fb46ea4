"""Multi-view probes: a layer seen through X U, (X X^T) U, X^T U and (X^T X) U (MVProbe).

ProbeX passes learned probes through one side of the weight matrix, Z = X U. MVProbe ("What
Linear Probes Miss: Multi-View Probing for Weight-Space Learning", ICML 2026, arXiv 2605.23410)
shows that this single view is ambiguous (two different X can give the same X U) and adds three
more, each with its own probe matrix. In our orientation, X [d_W, d_H] (rows = output units):

    =====  ==============  ================  ===============
    view   response        probes U          points x probes
    =====  ==============  ================  ===============
    xu     X U1            [d_H, r_U]        d_W x r_U  (ProbeX's only view)
    xxtu   (X X^T) U2      [d_W, r_U]        d_W x r_U  (rows' Gram matrix)
    xtu    X^T U3          [d_W, r_U]        d_H x r_U
    xtxu   (X^T X) U4      [d_H, r_U]        d_H x r_U  (columns' Gram matrix)
    =====  ==============  ================  ===============

Each response is standardised per model over (points, probes) (the second-order views are
larger by a factor of about d sigma^2, the paper's Theorem 3, and would otherwise dominate),
projected per probe by the view's own projection (to r_V, then ReLU), flattened; the views'
features are concatenated and one linear encoder maps them to the representation (r_T). Heads
are ProbeX's. ``views`` picks any subset by name, or a group: ``"first"`` = xu + xtu,
``"second"`` = xxtu + xtxu, ``"all"``; ``"xu"`` alone is ProbeX itself (:func:`probex_network`
builds today's :class:`~probex.experts.nn.ProbeXNetwork` for it, so it is unchanged to the bit).

Default sizes (a size left None) follow ProbeX's rule for the layer: r_U = r_V = r_T = r, the
size :func:`~probex.experts.nn.default_sizes` gives single-view ProbeX on [d_W, d_H], then
clipped per view to its probe matrix's rows and its points, as given sizes are. Each view is
a ProbeX of the matrix it probes: xu reads X [d_W, d_H] and xtu reads X^T [d_H, d_W], the
transposed shape, which ``default_sizes`` sizes alike (its budget is symmetric in d_W and d_H);
the Gram views' matrices are [d_W, d_W] and [d_H, d_H], but of rank at most min(d_W, d_H):
they hold no more than the layer's d_W d_H values, so their budget is the layer's, not their
own size's. One r for every view is that rule. With all four views the encoder's U and V hold
4 r (d_W + d_H) weights (r <= min(d_W, d_H)), four times ProbeX's, and its M 4 r^3, four
times ProbeX's: a default multi-view encoder is about as large as one ProbeX encoder per view,
about 2 n_views times the layer's weights, so with C outputs about C / (2 n_views) times
smaller than Dense. On the demo jungle (24 classes): conv3 [48, 216], r = 24, 81,360 parameters
(ProbeX 20,808, Dense 248,856); the mixer's block1.channel_fc2 [64, 512], r = 35, 253,179
(ProbeX 63,969, Dense 786,456); at the fixed 128 they were 4.09M and 5.00M. Sharing ProbeX's
one budget among the views instead (r = 12 and 18 there) was measured and lost to ProbeX by
0.04 and 0.07 (test mean binary accuracy); one ProbeX-sized view each matched or beat it.
Experts saved before sizes scaled (their state lacks :data:`SIZES_KEY`) gave a None size
:data:`LEGACY_SIZE` and are loaded so (:func:`saved_build_args`).

Every view reads the normalised layer Y = (X - C) / sigma (:class:`~probex.experts.nn.InputNormalization`).
LoRA factors (X = s B A) are never merged: Y M = (s B (A M) - C M) / sigma and
Y^T M = (s A^T (B^T M) - C^T M) / sigma, so (Y Y^T) U = Y (Y^T U) holds
s^2 B (A A^T)(B^T U), r x r in the middle, plus the centre's terms, which cost what one dense
view costs (C times a [d_H, r_U] matrix per model) but never hold a model's [d_W, d_H].
"""

from __future__ import annotations

import math
import re
from typing import Optional, Sequence, Union

import torch
from torch import nn

from probex.errors import ProbeXError
from probex.estimator import Rule
from probex.experts.nn import (MERGE_MAX_VALUES, InputNormalization, LayerBatch, LayersNetwork, ProbeXNetwork,
                              _activation, default_sizes)
from probex.zoo.factored import LoraFactors

#: The four views, in the order their features are concatenated.
VIEWS = ("xu", "xxtu", "xtu", "xtxu")
#: Named groups of views (the paper's ablation names them so).
VIEW_GROUPS = {"all": VIEWS, "first": ("xu", "xtu"), "second": ("xxtu", "xtxu")}
#: ProbeX's one view.
SINGLE_VIEW = ("xu",)
#: Added to a response's standard deviation before dividing (a constant response stays finite).
STANDARDIZE_EPS = 1e-8
#: The size every None size took before multi-view sizes scaled with the layer (the paper's 128,
#: clipped per view); experts saved then are loaded with it.
LEGACY_SIZE = 128
#: The key a saved ProbeX expert's state carries when its multi-view sizes scale with the layer.
SIZES_KEY = "multiview_sizes"
#: Its value: None sizes follow :func:`default_multiview_size`.
SIZES_SCALED = "layer"

ViewsSpec = Union[str, Sequence[str]]


def parse_views(views: ViewsSpec) -> tuple[str, ...]:
    """The views a spec names, in :data:`VIEWS` order: ``"all"``, ``"first"``, ``"xu+xtu"``,
    ``"xu,xxtu"``, ``["xu", "second"]``, ...; ProbeXError for an unknown name or an empty spec."""
    if isinstance(views, str):
        names = [name for name in re.split(r"[+,\s]+", views.strip().lower()) if name]
    elif isinstance(views, (list, tuple)) and all(isinstance(name, str) for name in views):
        names = [name.strip().lower() for name in views]
    else:
        raise ProbeXError(f"views: expected a name or a list of names; got {views!r}")
    chosen: set[str] = set()
    for name in names:
        if name in VIEW_GROUPS:
            chosen.update(VIEW_GROUPS[name])
        elif name in VIEWS:
            chosen.add(name)
        else:
            raise ProbeXError(f"views: unknown view {name!r}; views are {', '.join(VIEWS)}, groups "
                              f"{', '.join(VIEW_GROUPS)}, joined with '+' (e.g. 'xu+xtu')")
    if not chosen:
        raise ProbeXError("views: name at least one view (e.g. 'xu', 'all', 'xu+xtu')")
    return tuple(view for view in VIEWS if view in chosen)


def views_name(views: ViewsSpec) -> str:
    """The canonical name of a spec: ``"xu"``, ``"all"``, ``"first"``, ``"second"`` or views joined by '+'."""
    chosen = parse_views(views)
    for group, members in VIEW_GROUPS.items():
        if chosen == members:
            return group
    return "+".join(chosen)


def _accepts_views(value: object) -> bool:
    try:
        parse_views(value)  # type: ignore[arg-type]
    except ProbeXError:
        return False
    return True


#: The ``views`` hyperparameter's rule (ProbeXClassifier, ProbeXAligner).
VIEWS_RULE = Rule(f"views among {', '.join(VIEWS)} or a group ({', '.join(VIEW_GROUPS)}), joined with '+'",
                  _accepts_views)


# -- the normalised layer times a matrix, merged or through the factors ------------------------

def _factored(X: LayerBatch, normalize: InputNormalization) -> bool:
    return isinstance(X, LoraFactors) and normalize.center.numel() > MERGE_MAX_VALUES


def _times(X: LayerBatch, normalize: InputNormalization, M: torch.Tensor, transpose: bool) -> torch.Tensor:
    """Y M [b, d_W, k] (or Y^T M [b, d_H, k] with ``transpose``), Y = (X - C) / sigma; M [d, k] or [b, d, k].

    ``X`` is a dense batch [b, d_W, d_H] or LoRA factors; factors of layers larger than
    ``MERGE_MAX_VALUES`` are never merged (see the module docstring)."""
    center = normalize.center.T if transpose else normalize.center
    if _factored(X, normalize):
        factors = X.float()
        scale = factors.scale[:, None, None]
        if transpose:  # s A^T (B^T M)
            low_rank = factors.A.transpose(1, 2) @ (factors.B.transpose(1, 2) @ M)
        else:  # s B (A M)
            low_rank = factors.B @ (factors.A @ M)
        return (low_rank * scale - center @ M) / normalize.scale
    if isinstance(X, LoraFactors):
        X = X.merge()
    Y = normalize(X)
    return (Y.transpose(1, 2) if transpose else Y) @ M


def view_response(view: str, X: LayerBatch, normalize: InputNormalization, U: torch.Tensor) -> torch.Tensor:
    """One view's raw response of the normalised layer Y: [b, points, k] (see :data:`VIEWS`)."""
    if view == "xu":
        return _times(X, normalize, U, transpose=False)
    if view == "xtu":
        return _times(X, normalize, U, transpose=True)
    if view == "xxtu":  # Y (Y^T U)
        return _times(X, normalize, _times(X, normalize, U, transpose=True), transpose=False)
    if view == "xtxu":  # Y^T (Y U)
        return _times(X, normalize, _times(X, normalize, U, transpose=False), transpose=True)
    raise ProbeXError(f"unknown view {view!r}; views are {', '.join(VIEWS)}")


def standardize_per_sample(S: torch.Tensor, eps: float = STANDARDIZE_EPS) -> torch.Tensor:
    """S [b, points, k] standardised per model over (points, probes): zero mean, unit (population) std."""
    mean = S.mean(dim=(1, 2), keepdim=True)
    std = S.std(dim=(1, 2), keepdim=True, correction=0)
    return (S - mean) / (std + eps)


# -- the encoder ---------------------------------------------------------------------------------

def default_multiview_size(d_W: int, d_H: int) -> int:
    """r, the size of each of r_U, r_V, r_T a multi-view encoder of a layer [d_W, d_H] takes when
    none is given: single-view ProbeX's default for the layer (:func:`~probex.experts.nn.default_sizes`),
    clipped per view later (see the module docstring for why one r serves every view)."""
    return default_sizes(d_W, d_H)[2]


def saved_build_args(state: dict, views: ViewsSpec) -> dict:
    """:func:`probex_network`'s extra arguments that rebuild a saved ProbeX expert of these ``views`` as it
    was trained: ``{"default_size": LEGACY_SIZE}`` for a multi-view expert saved before sizes scaled with
    the layer (its ``state`` lacks :data:`SIZES_KEY`), else none (single-view ProbeX is never affected)."""
    if parse_views(views) == SINGLE_VIEW or state.get(SIZES_KEY) == SIZES_SCALED:
        return {}
    return {"default_size": LEGACY_SIZE}


class ScaledSizesState:
    """For a ProbeX expert (classifier or aligner) that may use multi-view probes: its saved state says
    that None sizes scale with the layer (:data:`SIZES_KEY`), and a state saved before that rule is
    loaded with the sizes it was trained with (:func:`saved_build_args`). Put before the expert's base."""

    views: ViewsSpec

    def _state(self):
        state, tensors = super()._state()
        state[SIZES_KEY] = SIZES_SCALED
        return state, tensors

    def _saved_build_args(self, state: dict) -> dict:
        return saved_build_args(state, self.views)


def _view_dims(view: str, d_W: int, d_H: int) -> tuple[int, int]:
    """(rows of the view's probe matrix U, points of its response) for a layer [d_W, d_H]."""
    return {"xu": (d_H, d_W), "xxtu": (d_W, d_W), "xtu": (d_W, d_H), "xtxu": (d_H, d_H)}[view]


class MultiViewProbeX(nn.Module):
    """The multi-view ProbeX encoder of one layer: X [N, d_W, d_H] -> representation e [N, r_T].

    Args:
        d_W, d_H: the layer's shape (rows = output units, columns = input units).
        views: the views to use (:func:`parse_views`; default all four).
        n_probes: r_U, probes per view (clipped per view to its probe matrix's rows).
        proj_dim: r_V, each view's projection size (clipped per view to its points).
        rep_dim: r_T, the representation's size (clipped to the concatenated features).
        activation: after each view's projection: "relu" (default, the paper's) or "none".
        encoder_depth: 1 is one linear encoder; more adds (activation, linear r_T -> r_T) blocks.
        default_size: the size a None size takes; None (default): :func:`default_multiview_size`,
            ProbeX's size for the layer (see the module docstring). :data:`LEGACY_SIZE` rebuilds an
            expert saved before sizes scaled with the layer.
    """

    def __init__(
        self,
        d_W: int,
        d_H: int,
        views: ViewsSpec = "all",
        n_probes: Optional[int] = None,
        proj_dim: Optional[int] = None,
        rep_dim: Optional[int] = None,
        activation: str = "relu",
        encoder_depth: int = 1,
        default_size: Optional[int] = None,
    ):
        super().__init__()
        if default_size is None:  # a size left to the layer: ProbeX's for it, clipped per view below
            default_size = default_multiview_size(d_W, d_H) if min(d_W, d_H) >= 1 else 1
        n_probes, proj_dim, rep_dim = (default_size if size is None else size for size in (n_probes, proj_dim, rep_dim))
        if min(d_W, d_H, n_probes, proj_dim, rep_dim, encoder_depth) < 1:
            raise ProbeXError("layer sizes, n_probes, proj_dim, rep_dim and encoder_depth must all be >= 1")
        self.d_W, self.d_H = d_W, d_H
        self.views = parse_views(views)
        self.activation_name = activation
        self.normalize = InputNormalization((d_W, d_H))
        self.probes = nn.ParameterDict()
        self.projections = nn.ModuleDict()
        features = 0
        for view in self.views:
            probe_rows, points = _view_dims(view, d_W, d_H)
            k, p = min(n_probes, probe_rows), min(proj_dim, points)
            self.probes[view] = nn.Parameter(torch.randn(probe_rows, k) / math.sqrt(probe_rows))
            self.projections[view] = nn.Linear(points, p)
            features += k * p
        self.n_features = features
        self.rep_dim = min(rep_dim, features)
        self.activation = _activation(activation)
        self.encoder = nn.Linear(features, self.rep_dim)
        extra: list[nn.Module] = []
        for _ in range(encoder_depth - 1):
            extra += [_activation(activation), nn.Linear(self.rep_dim, self.rep_dim)]
        self.deeper = nn.Sequential(*extra)

    def responses(self, X: LayerBatch) -> dict[str, torch.Tensor]:
        """Each view's standardised response {view: [N, points, k]}."""
        return {view: standardize_per_sample(view_response(view, X, self.normalize, self.probes[view]))
                for view in self.views}

    def forward(self, X: LayerBatch) -> torch.Tensor:
        features = [self.activation(self.projections[view](S.transpose(1, 2))).flatten(1)  # [N, k * p] per view
                    for view, S in self.responses(X).items()]
        return self.deeper(self.encoder(torch.cat(features, dim=1)))


class MultiViewNetwork(LayersNetwork):
    """Multi-view ProbeX encoders (one per layer) plus the head T."""

    def __init__(self, layer_shapes: Sequence[tuple[int, int]], out_dim: int, views: ViewsSpec = "all", **probex_args):
        super().__init__([MultiViewProbeX(d_W, d_H, views=views, **probex_args) for d_W, d_H in layer_shapes], out_dim)


def probex_network(layer_shapes: Sequence[tuple[int, int]], out_dim: int, views: ViewsSpec = "xu",
                   default_size: Optional[int] = None, **probex_args) -> LayersNetwork:
    """The ProbeX network of the given views: ProbeX itself for ``"xu"``, else multi-view.

    ``probex_args`` are ProbeX's sizes and activation (n_probes, proj_dim, rep_dim, activation,
    encoder_depth), passed on unchanged; None sizes scale with each layer alike for one view and
    for several. ``default_size`` (multi-view only; single-view ProbeX has its own rule, unchanged)
    overrides what a None size becomes (:class:`MultiViewProbeX`).
    """
    chosen = parse_views(views)
    if chosen == SINGLE_VIEW:
        return ProbeXNetwork(layer_shapes, out_dim, **probex_args)
    return MultiViewNetwork(layer_shapes, out_dim, views=chosen, default_size=default_size, **probex_args)
