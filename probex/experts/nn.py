"""The ProbeX encoder and the networks built on it (the paper's notation throughout).

One layer's weight matrix X [d_W, d_H] is probed by r_U learned vectors u_l: the responses
z_l = X u_l [d_W] are projected by a shared V to r_V dimensions, activated (ReLU, or nothing
for the linear ProbeX), and encoded per probe by M_l to r_T dimensions; the model
representation is e = sum_l M_l sigma(V^T z_l). Efficiently: Z = X @ U, project every column
with V, activate, flatten, one linear layer (the M_l stacked side by side).

A head T maps e to the task output. With no activation, ProbeX + head is a dense linear map
whose weight tensor has a Tucker decomposition (the paper's Proposition 2):
``ProbeXNetwork.dense_equivalent()`` computes it.

Every network takes each layer as a float32 batch: a tensor [b, d_W, d_H], or LoRA factors
(:class:`~probex.zoo.factored.LoraFactors`, X = s B A). ProbeX reads factors without merging
them: (X - C) U / sigma = (s B (A U) - C U) / sigma, r (d_W + d_H) per probe instead of
d_W d_H, and projects them as (V^T s B)(A U) without forming Z (:meth:`ProbeX._project_factors`). The Dense baseline merges each batch (see :class:`DenseEncoder` for why).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from torch import nn
from probex.errors import ProbeXError

from probex.zoo.factored import LoraFactors
from probex.zoo.stack import MatrixStack, as_stack

#: One layer of a batch of models, as the networks read it (float32).
LayerBatch = Union[torch.Tensor, LoraFactors]

#: LoRA layers of at most this many values are merged batch by batch rather than probed as factors:
#: up to 64 x 64 a merged batch costs the same time (measured on one CPU thread, rank 4, 64
#: probes) and gives the very numbers a dense bank of the same layer gives.
MERGE_MAX_VALUES = 64 * 64

# rows of a chunk of float64 sums in InputNormalization.fit (also bounded by bytes)
_FIT_CHUNK_ROWS = 1024
_FIT_CHUNK_BYTES = 128 * 2**20

ACTIVATIONS = ("relu", "none")


def _activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "none":
        return nn.Identity()
    raise ProbeXError(f"activation must be one of {ACTIVATIONS}; got {name!r}")


class InputNormalization(nn.Module):
    """(X - centre) / scale with a centre matrix and a scalar scale, fixed from training data.

    Subtracting the population's mean matrix (in a Model Tree: close to the root) and dividing
    by one scalar keeps every network in its function class (both are affine maps of X) while
    making training independent of the weights' scale.
    """

    def __init__(self, shape: tuple[int, int]):
        super().__init__()
        self.register_buffer("center", torch.zeros(shape))
        self.register_buffer("scale", torch.ones(()))

    @torch.no_grad()
    def fit(self, X: MatrixStack | torch.Tensor | LoraFactors) -> None:
        """Set centre and scale from X [N, d_W, d_H], read in chunks (it may be memory-mapped).

        Dense: two passes in float64 (the mean, then the squared deviations). LoRA factors,
        exactly and without merging a model: the centre is (1/N) sum s_i B_i A_i (one product
        per chunk of models, [d_W, k r] @ [k r, d_H]), and sum ||X_i - C||^2 = sum ||X_i||^2 - N ||C||^2
        with ||X_i||^2 = s_i^2 tr((B_i^T B_i)(A_i A_i^T)), in float64.
        """
        X = as_stack(X)
        n, d_W, d_H = X.shape
        if X.factored:
            total = torch.zeros(d_W, d_H, dtype=torch.float64)
            squares = 0.0
            step = max(1, _FIT_CHUNK_BYTES // (8 * X.storage.rank * (d_W + d_H)))
            for start in range(0, n, step):
                factors = X.take(slice(start, start + step))
                scaled = factors.B * factors.scale[:, None, None]  # [k, d_W, r]
                total += (scaled.transpose(0, 1).reshape(d_W, -1) @ factors.A.reshape(-1, d_H)).double()
                squares += float(factors.squared_norms().sum())
            center = total / n
            squares -= n * float((center ** 2).sum())
        else:
            step = max(1, min(_FIT_CHUNK_ROWS, _FIT_CHUNK_BYTES // (8 * d_W * d_H)))
            total = torch.zeros(d_W, d_H, dtype=torch.float64)
            for start in range(0, n, step):
                total += X.take(slice(start, start + step)).double().sum(dim=0)
            center = total / n
            squares = 0.0
            for start in range(0, n, step):
                squares += float(((X.take(slice(start, start + step)).double() - center) ** 2).sum())
        std = math.sqrt(max(squares, 0.0) / max(n * d_W * d_H, 1))
        self.center.copy_(center.float())
        self.scale.fill_(std if std > 0 else 1.0)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return (X - self.center) / self.scale

    def probe(self, X: LayerBatch, U: torch.Tensor) -> torch.Tensor:
        """The normalised layer times U, ((X - C) / sigma) U [b, d_W, k]; LoRA factors are not merged
        (but for layers of at most ``MERGE_MAX_VALUES`` values, where merging costs nothing)."""
        if isinstance(X, LoraFactors):
            if self.center.numel() > MERGE_MAX_VALUES:
                return (X.response(U) - self.center @ U) / self.scale
            X = X.merge()
        return self(X) @ U


#: The bounds of ProbeX's default sizes (r_U = r_V = r_T); 128 is the paper's size on large layers.
DEFAULT_SIZE_RANGE = (4, 128)
#: A default ProbeX encoder holds at most this many times as many weights as the layer it reads.
DEFAULT_SIZE_BUDGET = 2


def default_sizes(d_W: int, d_H: int) -> tuple[int, int, int]:
    """(r_U, r_V, r_T) for a layer [d_W, d_H] when none are given.

    One size r for all three, the largest in :data:`DEFAULT_SIZE_RANGE` (each clipped to the layer
    as ProbeX clips it) whose encoder (U, V and the M_l: r_U d_H + r_V d_W + r_U r_V r_T weights)
    holds at most :data:`DEFAULT_SIZE_BUDGET` times the layer's d_W d_H weights. The Dense expert
    has d_W d_H weights per output, so with C outputs a default ProbeX is about C / 2 times smaller
    than Dense, on small layers as on large ones. 128 each is reached from about 1,100 x 1,100
    (768 x 768 gets 100, 64 x 64 gets 18, a 12 x 48 head 8).
    """
    smallest, largest = DEFAULT_SIZE_RANGE
    chosen = smallest
    for r in range(smallest, largest + 1):
        r_U, r_V = min(r, d_H), min(r, d_W)
        if r_U * d_H + r_V * d_W + r_U * r_V * min(r, r_U * r_V) > DEFAULT_SIZE_BUDGET * d_W * d_H:
            break
        chosen = r
    return min(chosen, d_H), min(chosen, d_W), chosen


class ProbeX(nn.Module):
    """The ProbeX encoder of one layer: X [N, d_W, d_H] -> representation e [N, r_T].

    Args:
        d_W, d_H: the layer's shape (rows = output units, columns = input units).
        n_probes: r_U, the number of probes u_l (clipped to d_H; None: :func:`default_sizes`).
        proj_dim: r_V, the shared projection's size (clipped to d_W; None: :func:`default_sizes`).
        rep_dim: r_T, the representation's size (clipped to r_U * r_V; None: :func:`default_sizes`).
        activation: "relu" (default) or "none" (the linear ProbeX).
        encoder_depth: 1 is the paper's ProbeX; more adds (activation, linear r_T -> r_T)
            blocks after e (the paper's encoder-depth ablation).
    """

    def __init__(
        self,
        d_W: int,
        d_H: int,
        n_probes: Optional[int] = None,
        proj_dim: Optional[int] = None,
        rep_dim: Optional[int] = None,
        activation: str = "relu",
        encoder_depth: int = 1,
    ):
        super().__init__()
        sizes = default_sizes(d_W, d_H) if min(d_W, d_H) >= 1 else (1, 1, 1)
        n_probes, proj_dim, rep_dim = (given if given is not None else default
                                       for given, default in zip((n_probes, proj_dim, rep_dim), sizes))
        if min(d_W, d_H, n_probes, proj_dim, rep_dim, encoder_depth) < 1:
            raise ProbeXError("layer sizes, n_probes, proj_dim, rep_dim and encoder_depth must all be >= 1")
        self.d_W, self.d_H = d_W, d_H
        self.n_probes = min(n_probes, d_H)
        self.proj_dim = min(proj_dim, d_W)
        self.rep_dim = min(rep_dim, self.n_probes * self.proj_dim)
        self.activation_name = activation
        self.normalize = InputNormalization((d_W, d_H))
        self.probes = nn.Parameter(torch.randn(d_H, self.n_probes) / math.sqrt(d_H))  # U
        self.projection = nn.Linear(d_W, self.proj_dim)  # V, shared by all probes
        self.activation = _activation(activation)
        self.encoder = nn.Linear(self.n_probes * self.proj_dim, self.rep_dim)  # M_1 .. M_rU side by side
        extra: list[nn.Module] = []
        for _ in range(encoder_depth - 1):
            extra += [_activation(activation), nn.Linear(self.rep_dim, self.rep_dim)]
        self.deeper = nn.Sequential(*extra)

    def forward(self, X: LayerBatch) -> torch.Tensor:
        if isinstance(X, LoraFactors) and self.normalize.center.numel() > MERGE_MAX_VALUES:
            projected = self._project_factors(X)
        else:
            responses = self.normalize.probe(X, self.probes)  # Z: [N, d_W, r_U], column l is z_l = X u_l
            projected = self.projection(responses.transpose(1, 2))  # [N, r_U, r_V]: V^T z_l (+ bias) per probe
        representation = self.encoder(self.activation(projected).flatten(1))  # e = sum_l M_l sigma(V^T z_l)
        return self.deeper(representation)


    def _project_factors(self, X: LoraFactors) -> torch.Tensor:
        """V^T z_l (+ bias) for every probe [N, r_U, r_V], straight from LoRA factors.

        V^T ((s B A - C) / sigma) U = ((V^T s B)(A U) - (V^T C) U) / sigma: per model
        r (d_W r_V + d_H r_U + r_V r_U) multiply-adds instead of r (d_W + d_H) r_U to form
        Z [d_W, r_U] and then d_W r_U r_V to project it; at 1280 x 1280, rank 16 and 128 probes,
        3.2 times fewer (the projection of Z dominated). The same function; float rounding only.
        """
        weight = self.projection.weight  # V^T [r_V, d_W]
        normalize = self.normalize
        centred = X.sketch(weight, self.probes.T) - (weight @ normalize.center) @ self.probes  # [N, r_V, r_U]
        return (centred / normalize.scale).transpose(1, 2) + self.projection.bias


class DenseEncoder(nn.Module):
    """The Dense baseline's input side: the flattened, normalised layer (no learned encoder).

    LoRA factors are merged batch by batch. Applying the head's K weight matrices to the factors
    directly (<W_k, s B A> = s tr(B^T W_k A^T)) costs K d_W d_H r per model, against
    d_W d_H (r + K) for merging first, and the weights' gradient, sum_i g_ik X_i, is itself a sum
    of merged matrices; so the batch's merged matrices (b d_W d_H float32 values) are the cheapest
    way, in time and in memory, for this baseline.
    """

    def __init__(self, d_W: int, d_H: int):
        super().__init__()
        self.d_W, self.d_H = d_W, d_H
        self.rep_dim = d_W * d_H
        self.normalize = InputNormalization((d_W, d_H))

    def forward(self, X: LayerBatch) -> torch.Tensor:
        if isinstance(X, LoraFactors):
            X = X.merge()
        return self.normalize(X).flatten(1)


class LayersNetwork(nn.Module):
    """One encoder per layer, their representations concatenated, one linear head.

    forward(layers: list of [N, d_W, d_H] tensors or LoraFactors) -> [N, out_dim];
    encode(layers) -> [N, sum r_T]; fit_normalization(stacks) reads the training set once.
    """

    def __init__(self, encoders: Sequence[nn.Module], out_dim: int):
        super().__init__()
        self.encoders = nn.ModuleList(encoders)
        self.head = nn.Linear(sum(encoder.rep_dim for encoder in self.encoders), out_dim)

    def fit_normalization(self, layers: Sequence[MatrixStack | torch.Tensor | LoraFactors]) -> None:
        for encoder, X in zip(self.encoders, layers):
            encoder.normalize.fit(X)

    def encode(self, layers: Sequence[LayerBatch]) -> torch.Tensor:
        return torch.cat([encoder(X) for encoder, X in zip(self.encoders, layers)], dim=1)

    def forward(self, layers: Sequence[LayerBatch]) -> torch.Tensor:
        return self.head(self.encode(layers))

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ProbeXNetwork(LayersNetwork):
    """ProbeX encoders (one per layer) plus the head T."""

    def __init__(self, layer_shapes: Sequence[tuple[int, int]], out_dim: int, **probex_args):
        super().__init__([ProbeX(d_W, d_H, **probex_args) for d_W, d_H in layer_shapes], out_dim)

    @torch.no_grad()
    def dense_equivalent(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The dense linear expert this linear ProbeX equals (Proposition 2).

        Returns (W, b): one tensor W_l [out_dim, d_W, d_H] per layer and a bias [out_dim], with
        output_k = sum_l sum_ij W_l[k, i, j] X_l[i, j] + b_k and, per layer,
        W_kij = sum_nml T_kn M_nlm V_mi U_jl (a Tucker decomposition), folded with the input
        normalisation. Only defined for activation "none" and encoder_depth 1.
        """
        weights, bias = [], self.head.bias.double().clone()
        offset = 0
        for encoder in self.encoders:
            if encoder.activation_name != "none" or len(encoder.deeper) > 0:
                raise ProbeXError("dense_equivalent needs the linear ProbeX: activation='none', encoder_depth=1")
            T = self.head.weight[:, offset : offset + encoder.rep_dim].double()  # [out, r_T]
            offset += encoder.rep_dim
            M = encoder.encoder.weight.double().reshape(encoder.rep_dim, encoder.n_probes, encoder.proj_dim)
            V = encoder.projection.weight.double()  # [r_V, d_W]
            U = encoder.probes.double()  # [d_H, r_U]
            W = torch.einsum("kn,nlm,mi,jl->kij", T, M, V, U)
            # constant terms: the projection's bias seen by every probe, then the encoder's bias
            bias += T @ (M.sum(dim=1) @ encoder.projection.bias.double() + encoder.encoder.bias.double())
            # fold the input normalisation (X - C) / s into W and b
            scale = encoder.normalize.scale.double()
            bias -= torch.einsum("kij,ij->k", W, encoder.normalize.center.double()) / scale
            weights.append((W / scale).float())
        return weights, bias.float()

    @classmethod
    @torch.no_grad()
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor) -> "ProbeXNetwork":
        """A linear ProbeX that computes exactly the dense expert (W [out, d_W, d_H], b) (Proposition 1).

        With r_U = d_H probes, r_V = d_W and r_T = d_W * d_H, identity U, V and M reproduce
        X itself as the representation, so the head can carry any dense weight tensor.
        """
        out_dim, d_W, d_H = weight.shape
        network = cls([(d_W, d_H)], out_dim, n_probes=d_H, proj_dim=d_W, rep_dim=d_W * d_H, activation="none")
        encoder = network.encoders[0]
        encoder.probes.copy_(torch.eye(d_H))
        encoder.projection.weight.copy_(torch.eye(d_W))
        encoder.projection.bias.zero_()
        encoder.encoder.weight.copy_(torch.eye(d_W * d_H))
        encoder.encoder.bias.zero_()
        # e[l * d_W + i] = X[i, l], so the head's column l * d_W + i carries W[:, i, l]
        network.head.weight.copy_(weight.permute(0, 2, 1).reshape(out_dim, d_W * d_H))
        network.head.bias.copy_(bias)
        return network


class DenseNetwork(LayersNetwork):
    """The Dense expert: one linear layer on the flattened weights of every layer."""

    def __init__(self, layer_shapes: Sequence[tuple[int, int]], out_dim: int):
        super().__init__([DenseEncoder(d_W, d_H) for d_W, d_H in layer_shapes], out_dim)
