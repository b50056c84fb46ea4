"""The small image classifiers of the demo jungle's discriminative trees.

``SmallCNN`` (3-12-24-48 convolutions, ~14k parameters), ``TinyMixer`` (an MLP-Mixer on 4x4
patches, ~10k parameters) and its wider form ``wide-mixer`` (64-wide tokens, 512-wide channel
MLPs, ~140k parameters) classify 16x16 RGB images; ``wider-mixer`` (128-wide tokens, 1024-wide
channel MLPs, ~540k parameters), ``wide-cnn`` (conv3 with 192 channels, ~47k parameters) and ``vit``
(a two-block vision transformer, ~105k parameters) are there for recipe studies. They are ordinary
modules; the forge trains many of them at once by stacking their parameters (``torch.func``).
:func:`add_lora` turns a model into its LoRA fine-tuning form (frozen weights, trainable low-rank
updates and head).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probex.errors import ProbeXError


class SmallCNN(nn.Module):
    """conv 3->12->24->48 (3x3, ReLU, 2x2 max-pool after the first two), global average pool, linear head.

    ``widths`` sets the three convolutions' output channels (``wide-cnn``: a 192-channel conv3).
    """

    def __init__(self, n_classes: int, widths: tuple[int, int, int] = (12, 24, 48)):
        super().__init__()
        first, second, third = widths
        self.conv1 = nn.Conv2d(3, first, 3, padding=1)
        self.conv2 = nn.Conv2d(first, second, 3, padding=1)
        self.conv3 = nn.Conv2d(second, third, 3, padding=1)
        self.head = nn.Linear(third, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x)).mean(dim=(2, 3))
        return self.head(x)


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_fc1 = nn.Linear(tokens, token_hidden)
        self.token_fc2 = nn.Linear(token_hidden, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_fc1 = nn.Linear(dim, channel_hidden)
        self.channel_fc2 = nn.Linear(channel_hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, tokens, dim]
        mixed = self.token_fc2(F.gelu(self.token_fc1(self.norm1(x).transpose(1, 2)))).transpose(1, 2)
        x = x + mixed
        return x + self.channel_fc2(F.gelu(self.channel_fc1(self.norm2(x))))


class TinyMixer(nn.Module):
    """An MLP-Mixer: 16 patches of 4x4x3 -> ``dim``-d tokens, two mixer blocks, mean pool, linear head."""

    def __init__(self, n_classes: int, patch: int = 4, image: int = 16, dim: int = 24, channel_hidden: int = 64):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.block1 = MixerBlock(tokens, dim, 32, channel_hidden)
        self.block2 = MixerBlock(tokens, dim, 32, channel_hidden)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # [B, tokens, 3*p*p]
        x = self.block2(self.block1(self.embed(patches)))
        return self.head(self.norm(x).mean(dim=1))


class AttentionBlock(nn.Module):
    """A pre-norm transformer block: multi-head self-attention (one ``qkv`` matrix, ``proj``), then a GELU MLP."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, tokens, dim]
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = torch.softmax(q @ k.transpose(-2, -1) / (dim // self.heads) ** 0.5, dim=-1)
        x = x + self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    """A small vision transformer: 16 patches of 4x4x3 -> ``dim``-d tokens plus learned positions, two
    attention blocks, mean pool, linear head (``vit``: 64-wide tokens, 4 heads, 256-wide MLPs, ~105k parameters)."""

    def __init__(self, n_classes: int, patch: int = 4, image: int = 16, dim: int = 64, heads: int = 4,
                 hidden: int = 256):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.position = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.block1 = AttentionBlock(dim, heads, hidden)
        self.block2 = AttentionBlock(dim, heads, hidden)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # [B, tokens, 3*p*p]
        x = self.block2(self.block1(self.embed(patches) + self.position))
        return self.head(self.norm(x).mean(dim=1))


def _wide_cnn(n_classes: int) -> SmallCNN:
    return SmallCNN(n_classes, widths=(12, 24, 192))


def _wide_mixer(n_classes: int) -> TinyMixer:
    return TinyMixer(n_classes, dim=64, channel_hidden=512)


def _wider_mixer(n_classes: int) -> TinyMixer:
    return TinyMixer(n_classes, dim=128, channel_hidden=1024)


ARCHITECTURES = {"cnn": SmallCNN, "wide-cnn": _wide_cnn, "mixer": TinyMixer, "wide-mixer": _wide_mixer, "wider-mixer": _wider_mixer,
                 "vit": TinyViT}


def make_model(architecture: str, n_classes: int) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ProbeXError(f"architecture must be one of {sorted(ARCHITECTURES)}; got {architecture!r}")
    return ARCHITECTURES[architecture](n_classes)


class _LoRAFactors(nn.Module):
    def __init__(self, in_features: int, out_features: int, rank: int):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)  # A, kaiming-uniform as PEFT initialises it
        self.up = nn.Linear(rank, out_features, bias=False)  # B, zero: training starts at the root
        nn.init.zeros_(self.up.weight)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable rank-r update ``up @ down`` (scale 1, no alpha).

    Its trainable tensors are named ``<module>.lora.down.weight`` [r, in] and ``.lora.up.weight``
    [out, r], the diffusers key style, like the generative tree's LoRA files.
    """

    def __init__(self, base: nn.Linear, rank: int):
        super().__init__()
        self.register_buffer("weight", base.weight.detach().clone())
        self.register_buffer("bias", base.bias.detach().clone() if base.bias is not None else None)
        self.lora = _LoRAFactors(base.in_features, base.out_features, rank)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.lora.up(self.lora.down(x))


def add_lora(model: nn.Module, targets: tuple[str, ...], rank: int) -> nn.Module:
    """Turn ``model`` (in place) into its LoRA fine-tuning form and return it.

    Each target linear layer (a module name, e.g. ``"block2.channel_fc2"``) becomes a
    :class:`LoRALinear` whose down factor draws from torch's global generator (seed it per model,
    as every fine-tuning run starts its own LoRA); every other weight except the head's is frozen
    (kept as a buffer), so the model's parameters are the LoRA factors and the head.
    """
    for target in targets:
        parent_name, _, child = target.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(getattr(parent, child), rank))
    trainable = {id(part) for module in model.modules() if isinstance(module, _LoRAFactors) for part in module.modules()}
    trainable |= {id(part) for part in model.head.modules()}
    for module in list(model.modules()):
        if id(module) in trainable:
            continue
        for name, parameter in list(module.named_parameters(recurse=False)):
            delattr(module, name)
            module.register_buffer(name, parameter.detach())
    return model
