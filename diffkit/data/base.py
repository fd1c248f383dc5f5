"""Datamodules for diffusion training.

Batches are dicts: ``{"x": (B, *data_shape) float, "y": (B,) long}`` (``y`` only when labels
exist). Every datamodule knows its ``data_shape`` before ``setup`` so the CLI can link it to the
model, and offers held-out reference samples for metrics.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

__all__ = ["DiffusionDataModule"]


class DiffusionDataModule(L.LightningDataModule):
    """Base class; subclasses set ``data_shape`` (and ``num_classes``) in ``__init__``.

    ``data_range``: ``(low, high)`` bounds of the data values, or ``None`` when unbounded; the
    CLI links it into the model, which thresholds sampled x0 into it (images: ``(-1, 1)``).
    """

    data_shape: tuple[int, ...] = ()
    num_classes: int | None = None
    data_range: tuple[float, float] | None = None

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` held-out samples ``(n, *data_shape)`` (never seen in training)."""
        raise NotImplementedError

    def exact_distribution(self):
        """The data law in closed form (:class:`diffkit.sdes.exact.GaussianMixture`) or ``None``."""
        return None
