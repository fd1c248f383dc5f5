"""A procedurally generated image dataset: coloured discs, squares and triangles (offline).

Each image is ``(3, S, S)`` RGB: a dark grey background and one shape with a random colour,
centre and size, rendered at 4x resolution and box-filtered down (anti-aliased edges), then
quantised to 8 bits. Labels are the shape kind (0 disc, 1 square, 2 triangle). Every image is a
function of ``(seed, split, index)``, so splits are reproducible and disjoint draws.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from diffkit.data.images import ImageDataModule, ImageTensorDataset

__all__ = ["ShapesDataModule", "render_shapes"]

SHAPE_KINDS = ("disc", "square", "triangle")
_SUPERSAMPLE = 4


def render_shapes(n: int, image_size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` images ``(n, 3, S, S)`` uint8 and their labels ``(n,)`` long, from ``generator``."""
    s = image_size * _SUPERSAMPLE
    kind = torch.randint(0, len(SHAPE_KINDS), (n,), generator=generator)
    u = torch.rand(n, 8, generator=generator, dtype=torch.float64)
    radius = (0.18 + 0.17 * u[:, 0]) * s  # half-size between 18% and 35% of the side
    cx = radius + (s - 2 * radius) * u[:, 1]
    cy = radius + (s - 2 * radius) * u[:, 2]
    angle = 2 * math.pi * u[:, 3]
    hue = u[:, 4]
    colour = _hsv_to_rgb(hue, 0.6 + 0.4 * u[:, 5], 0.6 + 0.4 * u[:, 6])  # (n, 3)
    background = (0.05 + 0.2 * u[:, 7])[:, None].expand(n, 3)
    coords = torch.arange(s, dtype=torch.float64) + 0.5
    y, x = coords[None, :, None], coords[None, None, :]
    dx, dy = x - cx[:, None, None], y - cy[:, None, None]
    r = radius[:, None, None]
    disc = dx**2 + dy**2 <= r**2
    c, sn = angle.cos()[:, None, None], angle.sin()[:, None, None]
    rx, ry = c * dx + sn * dy, -sn * dx + c * dy  # rotated frame
    square = (rx.abs() <= r / math.sqrt(2)) & (ry.abs() <= r / math.sqrt(2))
    triangle = torch.ones_like(disc)
    for j in range(3):  # inside the three edges of an equilateral triangle of circumradius r
        a = 2 * math.pi * j / 3
        triangle &= rx * math.cos(a) + ry * math.sin(a) <= 0.5 * r
    k = kind[:, None, None]
    mask = torch.where(k == 0, disc, torch.where(k == 1, square, triangle)).to(torch.float64)
    mask = F.avg_pool2d(mask[:, None], _SUPERSAMPLE)  # (n, 1, S, S) coverage
    img = background[:, :, None, None] * (1 - mask) + colour[:, :, None, None] * mask
    return (img * 255.0).round().clamp(0, 255).to(torch.uint8), kind


def _hsv_to_rgb(h: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """HSV in [0, 1] -> RGB ``(n, 3)`` in [0, 1]."""
    k = torch.tensor([5.0, 3.0, 1.0], dtype=h.dtype)
    t = torch.remainder(k[None] + 6.0 * h[:, None], 6.0)
    return v[:, None] - v[:, None] * s[:, None] * (torch.minimum(t, 4.0 - t).clamp(0.0, 1.0))


class ShapesDataModule(ImageDataModule):
    """Coloured shapes on a dark background, ``(3, image_size, image_size)`` in [-1, 1].

    Args:
        num_train: images of the training files (``num_val`` of them give ``val/loss``).
        num_test: held-out images for :meth:`reference_samples` (drawn independently).
        image_size: side of the square images.
        batch_size, num_val, random_flip, conditional (labels: shape kind, 3 classes),
            num_workers, seed: see :class:`~diffkit.data.images.ImageDataModule`.
    """

    def __init__(
        self,
        num_train: int = 4096,
        num_test: int = 1024,
        image_size: int = 16,
        batch_size: int = 128,
        num_val: int = 128,
        random_flip: bool = False,
        conditional: bool = False,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, num_val, random_flip, conditional, num_workers, seed)
        self.save_hyperparameters()
        for field, value, low in (("num_train", num_train, 1), ("num_test", num_test, 1)):
            if value < low:
                raise ValueError(f"shapes: {field} must be >= {low}, got {value}")
        if image_size < 4:
            raise ValueError(f"shapes: image_size must be >= 4, got {image_size}")
        self.num_train, self.num_test, self.image_size = int(num_train), int(num_test), image_size
        self.data_shape = (3, int(image_size), int(image_size))
        self._set_labels(len(SHAPE_KINDS))

    def load_split(self, split: Literal["train", "test"]) -> Dataset:
        n = self.num_train if split == "train" else self.num_test
        g = torch.Generator().manual_seed(self.seed * 1000 + (1 if split == "train" else 2))
        images, labels = render_shapes(n, self.image_size, g)
        return ImageTensorDataset(images, labels, max_value=255.0)
