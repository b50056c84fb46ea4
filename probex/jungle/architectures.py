"""The small image classifiers of the demo jungle's discriminative trees.

``SmallCNN`` (3-12-24-48 convolutions, ~14k parameters) and ``TinyMixer`` (an MLP-Mixer on
4x4 patches, ~10k parameters) classify 16x16 RGB images. They are ordinary modules; the forge
trains many of them at once by stacking their parameters (``torch.func``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probex.errors import ProbeXError


class SmallCNN(nn.Module):
    """conv 3->12->24->48 (3x3, ReLU, 2x2 max-pool after the first two), global average pool, linear head."""

    def __init__(self, n_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv2 = nn.Conv2d(12, 24, 3, padding=1)
        self.conv3 = nn.Conv2d(24, 48, 3, padding=1)
        self.head = nn.Linear(48, n_classes)

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
    """An MLP-Mixer: 16 patches of 4x4x3 -> 24-d tokens, two mixer blocks, mean pool, linear head."""

    def __init__(self, n_classes: int, patch: int = 4, image: int = 16, dim: int = 24):
        super().__init__()
        self.patch = patch
        tokens = (image // patch) ** 2
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.block1 = MixerBlock(tokens, dim, 32, 64)
        self.block2 = MixerBlock(tokens, dim, 32, 64)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = F.unfold(images, self.patch, stride=self.patch).transpose(1, 2)  # [B, tokens, 3*p*p]
        x = self.block2(self.block1(self.embed(patches)))
        return self.head(self.norm(x).mean(dim=1))


ARCHITECTURES = {"cnn": SmallCNN, "mixer": TinyMixer}


def make_model(architecture: str, n_classes: int) -> nn.Module:
    if architecture not in ARCHITECTURES:
        raise ProbeXError(f"architecture must be one of {sorted(ARCHITECTURES)}; got {architecture!r}")
    return ARCHITECTURES[architecture](n_classes)
