"""The demo jungle's world: 64 procedural concepts ("a red star") drawn on the fly, no downloads.

8 shapes x 8 colours. Every image is drawn at 2x the asked size with a random position, size,
rotation, one of four backgrounds and colour jitter, then shrunk (anti-aliasing by averaging)
and noised. Rendering is vectorised: thousands of images per second on one CPU core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from probex.errors import ProbeXError

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "ring", "heart")
COLOURS = {
    "red": (0.90, 0.12, 0.12),
    "orange": (1.00, 0.55, 0.05),
    "yellow": (0.95, 0.90, 0.10),
    "green": (0.15, 0.75, 0.20),
    "cyan": (0.10, 0.85, 0.90),
    "blue": (0.15, 0.25, 0.95),
    "purple": (0.55, 0.15, 0.80),
    "pink": (1.00, 0.50, 0.75),
}
COLOUR_NAMES = tuple(COLOURS)
N_CONCEPTS = len(SHAPES) * len(COLOURS)


@dataclass(frozen=True)
class Concept:
    """One concept: a colour and a shape; its index is colour-major (index = colour * 8 + shape)."""

    index: int
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


def concept(index: int) -> Concept:
    if not 0 <= index < N_CONCEPTS:
        raise ProbeXError(f"concept index must be in [0, {N_CONCEPTS}); got {index}")
    return Concept(index, COLOUR_NAMES[index // len(SHAPES)], SHAPES[index % len(SHAPES)])


def concept_names() -> list[str]:
    """The 64 names, in index order: "red circle", "red square", ..."""
    return [concept(i).name for i in range(N_CONCEPTS)]


def concept_index(name: str) -> int:
    """The index of a name like "red star" (an optional leading "a "/"an " is ignored)."""
    words = name.lower().strip().removeprefix("a ").removeprefix("an ").split()
    if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
        raise ProbeXError(f"{name!r} is not a jungle concept; concepts are '<colour> <shape>' with colours "
                         f"{', '.join(COLOUR_NAMES)} and shapes {', '.join(SHAPES)}")
    return COLOUR_NAMES.index(words[0]) * len(SHAPES) + SHAPES.index(words[1])


def _heart(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Positive inside the heart curve (x^2 + y^2 - 1)^3 = x^2 y^3 (y pointing up)."""
    return -((x**2 + y**2 - 1) ** 3 - x**2 * y**3)


def _radius(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x**2 + y**2)


def _star(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    theta = torch.atan2(y, x)
    return (0.42 + 0.5 * torch.clamp(torch.cos(5 * (theta + math.pi / 2)), min=0) ** 2) - _radius(x, y)


def _cross(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    vertical = torch.minimum(0.28 - x.abs(), 0.9 - y.abs())
    horizontal = torch.minimum(0.28 - y.abs(), 0.9 - x.abs())
    return torch.maximum(vertical, horizontal)


# Signed "insideness" of each shape at points (x, y) of its own unit frame: > 0 inside.
_INSIDE = {
    "circle": lambda x, y: 0.85 - _radius(x, y),
    "square": lambda x, y: 0.72 - torch.maximum(x.abs(), y.abs()),
    "triangle": lambda x, y: torch.minimum(0.55 + y, 0.9 - (1.73 * x.abs() + y)) * 0.8,
    "diamond": lambda x, y: (1.0 - (x.abs() / 0.62 + y.abs() / 0.95)) * 0.6,  # taller than wide: never a square
    "star": _star,
    "cross": _cross,
    "ring": lambda x, y: torch.minimum(_radius(x, y) - 0.5, 0.9 - _radius(x, y)),
    "heart": lambda x, y: _heart(1.2 * x, -1.2 * y + 0.25).clamp(-1, 1) * 0.5,
}


def _shape_masks(x: torch.Tensor, y: torch.Tensor, shape_ids: torch.Tensor) -> torch.Tensor:
    """Soft masks [N, H, W] of each image's shape in its own (rotated, scaled) coordinates x, y."""
    sharpness = 48.0
    masks = torch.empty_like(x)
    for shape_id, shape in enumerate(SHAPES):
        chosen = shape_ids == shape_id
        if chosen.any():
            masks[chosen] = torch.sigmoid(sharpness * _INSIDE[shape](x[chosen], y[chosen]))
    return masks


def render(concept_ids: torch.Tensor, generator: torch.Generator | None = None, size: int = 16) -> torch.Tensor:
    """Images [N, 3, size, size] in [0, 1] of the given concept indices (a long tensor [N])."""
    concept_ids = torch.as_tensor(concept_ids, dtype=torch.long).flatten()
    n, big = concept_ids.numel(), 2 * size

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, *shape, generator=generator)

    shape_ids, colour_ids = concept_ids % len(SHAPES), concept_ids // len(SHAPES)
    axis = torch.linspace(-1, 1, big)
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    scale, angle = uniform(0.6, 0.9, 1, 1), uniform(-0.35, 0.35, 1, 1)
    cx, cy = uniform(-0.2, 0.2, 1, 1), uniform(-0.2, 0.2, 1, 1)
    dx, dy = (gx - cx) / scale, (gy - cy) / scale
    x = torch.cos(angle) * dx + torch.sin(angle) * dy
    y = -torch.sin(angle) * dx + torch.cos(angle) * dy
    mask = _shape_masks(x, y, shape_ids)[:, None]  # [N, 1, H, W]

    palette = torch.tensor(list(COLOURS.values()))
    colour = (palette[colour_ids] + uniform(-0.06, 0.06, 3)).clamp(0, 1)[:, :, None, None]
    background = _backgrounds(n, big, generator)
    image = mask * colour + (1 - mask) * background
    image = F.avg_pool2d(image, 2)
    image = image + 0.03 * torch.randn(image.shape, generator=generator)
    return image.clamp(0, 1)


def _backgrounds(n: int, size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Four kinds, chosen per image: dark, light grey, a gradient, low-frequency texture."""
    kind = torch.randint(0, 4, (n,), generator=generator)
    base = 0.05 + 0.15 * torch.rand(n, 1, 1, 1, generator=generator)
    dark = base.expand(n, 3, size, size)
    light = (0.55 + 0.25 * torch.rand(n, 1, 1, 1, generator=generator)).expand(n, 3, size, size)
    ramp = torch.linspace(0, 1, size)
    direction = torch.rand(n, 1, 1, 1, generator=generator) < 0.5
    ramp_image = torch.where(direction, ramp[None, None, :, None], ramp[None, None, None, :])
    gradient = 0.1 + 0.5 * ramp_image * torch.rand(n, 3, 1, 1, generator=generator)
    texture = F.interpolate(torch.rand(n, 3, 4, 4, generator=generator), size=size, mode="bilinear", align_corners=False)
    texture = 0.15 + 0.35 * texture
    choices = torch.stack([dark, light, gradient.expand(n, 3, size, size), texture])  # [4, N, 3, H, W]
    return choices[kind, torch.arange(n)]
