"""The demo jungle's text-to-image root, a "mini Stable Diffusion": a tiny U-Net with cross-attention.

Images are 16x16 RGB. The U-Net works at 16x16 and 8x8 and has three cross-attention layers
whose keys and values come from the frozen MiniLM token embeddings of the caption
(:meth:`probex.language.text.TextEncoder.encode_tokens`)::

    conv_in 3->32 | enc16 ResBlock 32 | downsample ->64 @8x8
    down: ResBlock 64 + attn (8x8, 64 ch)
    mid:  ResBlock 64 + attn (8x8, 64 ch) + ResBlock 64
    upsample ->16x16 | up: ResBlock 64+32->32 + attn (16x16, 32 ch) | conv_out 32->3

Each attention layer has diffusers' projection names ``to_q``, ``to_k``, ``to_v``, ``to_out``,
so LoRA files read like diffusers' (``unet.down.attn.to_q.lora.down.weight``).

It is trained by flow matching: ``x_t = (1 - t) * noise + t * image`` and the network predicts
the velocity ``image - noise``; sampling integrates that flow from noise (t=0) to an image
(t=1) with Euler steps and classifier-free guidance (the null caption is the empty text).

LoRA runs batched: ``lora`` maps a projection name (``"down.attn.to_q"``) to stacked factors
``(down [M, r, in], up [M, out, r])`` of M models, and a batch of M*b images (model-major: the
first b belong to model 0) passes each image through its own model's update
``W + up_m @ down_m``. Many LoRA models train at once this way: :func:`init_lora_factors`
stacks their factors (one shared start) and :class:`probex.jungle.forge.StackedAdam` gives each model its own
Adam state, learning rate and number of steps.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from probex.errors import ZooError
from probex.storage import atomic_path, atomic_write_json

#: The attention layers and their projections, in the order LoRA files list them.
ATTENTION_LAYERS = ("down.attn", "mid.attn", "up.attn")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out")

ROOT_WEIGHTS = "unet.safetensors"
ROOT_CONFIG = "config.json"

LoraFactors = Mapping[str, tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class UNetConfig:
    """The architecture of the mini U-Net (what a saved root's config.json stores)."""

    image_size: int = 16
    channels: int = 32  # at 16x16; twice this at 8x8
    context_dim: int = 384  # the text encoder's token size (MiniLM)
    heads: int = 4
    time_dim: int = 128
    groups: int = 8


class ResBlock(nn.Module):
    """Two 3x3 convolutions with the time embedding added in between, and a residual path."""

    def __init__(self, in_channels: int, out_channels: int, time_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(time_dim, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time(time)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


def _project(linear: nn.Linear, x: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
    """``linear(x)`` plus, per model m, ``x @ down_m.T @ up_m.T`` on model m's share of the batch."""
    y = linear(x)
    if factors is None:
        return y
    down, up = factors  # [M, r, in], [M, out, r]
    n_models = down.shape[0]
    if x.shape[0] % n_models:
        raise ValueError(f"a batch of {x.shape[0]} cannot be split among {n_models} LoRA models")
    per_model = x.reshape(n_models, -1, x.shape[-1])
    delta = torch.bmm(torch.bmm(per_model, down.transpose(1, 2)), up.transpose(1, 2))
    return y + delta.reshape(y.shape)


class CrossAttention(nn.Module):
    """Image tokens (queries) attend to text tokens (keys, values); diffusers' projection names."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(context_dim, channels, bias=False)
        self.to_v = nn.Linear(context_dim, channels, bias=False)
        self.to_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, lora: Mapping[str, tuple] | None = None) -> torch.Tensor:
        """x: [B, C, H, W]; context: [B, L, context_dim]; mask: [B, L] bool (True = a real token)."""
        lora = lora or {}
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, t.shape[1], self.heads, -1).transpose(1, 2)

        q = heads(_project(self.to_q, tokens, lora.get("to_q")))
        k = heads(_project(self.to_k, context, lora.get("to_k")))
        v = heads(_project(self.to_v, context, lora.get("to_v")))
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
        attended = attended.transpose(1, 2).reshape(batch, height * width, channels)
        out = _project(self.to_out, attended, lora.get("to_out"))
        return x + out.transpose(1, 2).reshape(batch, channels, height, width)


class AttentionBlock(nn.Module):
    """A ResBlock then cross-attention (``attn``); ``mid`` adds a second ResBlock."""

    def __init__(self, in_channels: int, out_channels: int, config: UNetConfig, second_resblock: bool = False):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, config.time_dim, config.groups)
        self.attn = CrossAttention(out_channels, config.context_dim, config.heads, config.groups)
        self.res2 = ResBlock(out_channels, out_channels, config.time_dim, config.groups) if second_resblock else None

    def forward(self, x, time, context, mask, lora=None):
        x = self.attn(self.res(x, time), context, mask, lora)
        return self.res2(x, time) if self.res2 is not None else x


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal features [B, dim] of flow times t in [0, 1] (scaled to 0..1000, like DDPM steps)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = 1000.0 * t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class MiniUNet(nn.Module):
    """The mini text-to-image U-Net: velocity [B, 3, 16, 16] of noisy images x_t at times t given a caption."""

    def __init__(self, config: UNetConfig = UNetConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.time_mlp = nn.Sequential(nn.Linear(config.time_dim, config.time_dim), nn.SiLU(), nn.Linear(config.time_dim, config.time_dim))
        self.conv_in = nn.Conv2d(3, c, 3, padding=1)
        self.enc16 = ResBlock(c, c, config.time_dim, config.groups)
        self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.down = AttentionBlock(2 * c, 2 * c, config)
        self.mid = AttentionBlock(2 * c, 2 * c, config, second_resblock=True)
        self.up = AttentionBlock(2 * c + c, c, config)
        self.norm_out = nn.GroupNorm(config.groups, c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor, lora: LoraFactors | None = None
    ) -> torch.Tensor:
        """x: [B, 3, H, W] in [-1, 1] scale; t: [B]; context: [B, L, 384]; mask: [B, L] bool.

        lora: optional stacked factors of M models by projection name (see the module docstring).
        """
        per_layer = _split_lora(lora)
        time = self.time_mlp(timestep_embedding(t, self.config.time_dim))
        h16 = self.enc16(self.conv_in(x), time)
        h = self.downsample(h16)
        h = self.down(h, time, context, mask, per_layer.get("down.attn"))
        h = self.mid(h, time, context, mask, per_layer.get("mid.attn"))
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.up(torch.cat([h, h16], dim=1), time, context, mask, per_layer.get("up.attn"))
        return self.conv_out(F.silu(self.norm_out(h)))

    def projection(self, name: str) -> nn.Linear:
        """The Linear of an attention projection, e.g. ``"mid.attn.to_q"``."""
        module = self.get_submodule(name)
        if not isinstance(module, nn.Linear):
            raise KeyError(f"{name!r} is not an attention projection; projections: {', '.join(lora_targets())}")
        return module


def lora_targets(projections: tuple[str, ...] = PROJECTIONS) -> list[str]:
    """The LoRA target names, ``["down.attn.to_q", "down.attn.to_k", ...]``."""
    return [f"{layer}.{projection}" for layer in ATTENTION_LAYERS for projection in projections]


def _split_lora(lora: LoraFactors | None) -> dict[str, dict[str, tuple]]:
    per_layer: dict[str, dict[str, tuple]] = {}
    for name, factors in (lora or {}).items():
        layer, _, projection = name.rpartition(".")
        if layer not in ATTENTION_LAYERS or projection not in PROJECTIONS:
            raise KeyError(f"no LoRA target {name!r}; targets: {', '.join(lora_targets())}")
        per_layer.setdefault(layer, {})[projection] = factors
    return per_layer


# -- training many LoRA models at once ----------------------------------------------------


def init_lora_factors(unet: "MiniUNet", n_models: int, rank: int, init_seed: int, targets: list[str] | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Stacked LoRA factors of ``n_models`` models, all starting from one initialisation.

    down (A) [M, rank, in] is normal with std 1/rank (as diffusers' LoRA layers start), drawn
    from ``init_seed`` and the projection's name, the same for every model; up (B) [M, out,
    rank] is zero, so every model starts as the root. Both require gradients.
    """
    factors = {}
    for name in targets or lora_targets():
        linear = unet.projection(name)
        digest = hashlib.sha256(f"{init_seed}:{name}".encode()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
        down = torch.randn(rank, linear.in_features, generator=generator) / rank
        factors[name] = (
            down.expand(n_models, -1, -1).clone().requires_grad_(),
            torch.zeros(n_models, linear.out_features, rank, requires_grad=True),
        )
    return factors


# -- flow matching ---------------------------------------------------------------------------


def flow_matching_loss(
    unet: MiniUNet,
    images: torch.Tensor,
    context: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    lora: LoraFactors | None = None,
    reduce_models: int | None = None,
) -> torch.Tensor:
    """Mean squared velocity error on images [B, 3, H, W] in [0, 1] at uniform times.

    With ``reduce_models`` = M the loss is returned per model, [M] (batch model-major), so that
    the gradients of M LoRA models stay independent and each model sees its own mean loss.
    """
    data = images * 2 - 1
    noise = torch.randn(data.shape, generator=generator)
    t = torch.rand(data.shape[0], generator=generator)
    tt = t[:, None, None, None]
    noisy = (1 - tt) * noise + tt * data
    error = (unet(noisy, t, context, mask, lora) - (data - noise)) ** 2
    if reduce_models is None:
        return error.mean()
    return error.reshape(reduce_models, -1).mean(dim=1)


@torch.no_grad()
def sample(
    unet: MiniUNet,
    context: torch.Tensor,
    mask: torch.Tensor,
    null_context: torch.Tensor,
    null_mask: torch.Tensor,
    generator: torch.Generator,
    steps: int = 24,
    guidance: float = 3.0,
    lora: LoraFactors | None = None,
) -> torch.Tensor:
    """Draw one image per caption: Euler steps of the flow with classifier-free guidance.

    Args:
        context, mask: the captions' token embeddings [B, L, 384] and mask [B, L].
        null_context, null_mask: the empty caption's, [1, L0, 384] and [1, L0].
        guidance: 1 is the plain conditional flow; larger follows the caption more.
        lora: stacked factors of M models; B must be a multiple of M (model-major).

    Returns:
        images [B, 3, H, W] in [0, 1].
    """
    batch = context.shape[0]
    size = unet.config.image_size
    length = max(context.shape[1], null_context.shape[1])
    both_context = torch.cat([_pad(context, length), _pad(null_context, length).expand(batch, -1, -1)])
    both_mask = torch.cat([_pad(mask, length), _pad(null_mask, length).expand(batch, -1)])
    both_lora = None if lora is None else {name: (torch.cat([d, d]), torch.cat([u, u])) for name, (d, u) in lora.items()}
    x = torch.randn(batch, 3, size, size, generator=generator)
    for step in range(steps):
        t = torch.full((2 * batch,), step / steps)
        velocity = unet(torch.cat([x, x]), t, both_context, both_mask, both_lora)
        conditional, unconditional = velocity[:batch], velocity[batch:]
        x = x + (unconditional + guidance * (conditional - unconditional)) / steps
    return ((x + 1) / 2).clamp(0, 1)


def _pad(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad the token axis (dim 1) to ``length`` (padding is masked out: False / zeros)."""
    missing = length - tensor.shape[1]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[1] = missing
    return torch.cat([tensor, torch.zeros(shape, dtype=tensor.dtype)], dim=1)


# -- saving a root -----------------------------------------------------------------------------


def save_root(unet: MiniUNet, directory: str | os.PathLike, info: Mapping[str, object] | None = None) -> Path:
    """Write a root as ``unet.safetensors`` (float32) and ``config.json`` (architecture + ``info``), atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in unet.state_dict().items()}
    with atomic_path(directory / ROOT_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "probex-mini-unet"})
    atomic_write_json(directory / ROOT_CONFIG, {"architecture": asdict(unet.config), **dict(info or {})})
    return directory


def load_root(directory: str | os.PathLike) -> tuple[MiniUNet, dict]:
    """A root written by :func:`save_root`: the U-Net (eval mode) and its config.json.

    Raises:
        ZooError: a file is missing or does not fit the architecture its config names.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    try:
        config = json.loads((directory / ROOT_CONFIG).read_text(encoding="utf-8"))
        unet = MiniUNet(UNetConfig(**config["architecture"]))
        unet.load_state_dict(load_file(str(directory / ROOT_WEIGHTS)))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as error:
        raise ZooError(
            f"{directory}: not a readable mini U-Net root ({error}); it needs {ROOT_WEIGHTS} and {ROOT_CONFIG} "
            "as written by probex.jungle.unet.save_root; build the root again without root_path"
        ) from error
    return unet.eval(), config
