"""x0 thresholding of a score model's predictions: static clipping and dynamic thresholding
[Imagen, Saharia et al. 2022, 2205.11487, section 2.3].

At high noise the x0 a model implies is ``x0 = A^{-1} (u_t - K eps)``; for VP at ``t = T``,
``sigma / alpha`` is about 152, so a small eps error puts x0 far outside the data range and a
deterministic sampler carries it to the end. Thresholding replaces x0 by a value inside the data
range ``[low, high]`` and re-derives eps and the score from it through the kernel, so every
sampler that uses the prediction (DDIM, DEIS, gDDIM, Heun, Euler-Maruyama, ...) sees one
consistent, clipped prediction.

With ``z = (x0 - c) / h`` the data range mapped to ``[-1, 1]`` (``c``, ``h``: centre and half
width):

* ``static``: ``z <- clip(z, -1, 1)``;
* ``dynamic``: per sample, ``s = clip(quantile_p(|z|), 1, s_max)`` and ``z <- clip(z, -s, s) / s``
  (Imagen's dynamic thresholding; ``s_max = None`` leaves ``s`` unbounded above, and
  ``s_max = 1`` reduces to ``static``).

The thresholded prediction is returned in the ``x0`` target, so ``eps = K^{-1} (u_t - A x0)``
and ``score = -K^{-T} eps`` hold exactly for the clipped x0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from diffkit.prediction import GridScoreModel, Prediction, ScoreModel, on_grid

__all__ = ["ThresholdedModel", "Thresholding", "threshold_x0"]

Thresholding = Literal["none", "static", "dynamic"]


def threshold_x0(
    x0: Tensor,
    kind: Thresholding,
    data_range: tuple[float, float] = (-1.0, 1.0),
    percentile: float = 0.995,
    max_scale: float | None = None,
) -> Tensor:
    """``x0`` ``(B, ...)`` thresholded into ``data_range`` (see the module docstring)."""
    if kind == "none":
        return x0
    low, high = float(data_range[0]), float(data_range[1])
    if kind == "static":
        return x0.clamp(low, high)
    if kind != "dynamic":
        raise ValueError(f"thresholding must be 'none', 'static' or 'dynamic', got {kind!r}")
    centre, half = 0.5 * (high + low), 0.5 * (high - low)
    unit = centre == 0.0 and half == 1.0  # images in [-1, 1]: no affine map
    z = x0 if unit else (x0 - centre) / half
    flat = z.detach().abs().reshape(z.shape[0], -1).float()
    s = torch.quantile(flat, percentile, dim=1).clamp(min=1.0)
    if max_scale is not None:
        s = s.clamp(max=max_scale)
    s = s.to(z.dtype).reshape((-1,) + (1,) * (z.dim() - 1))
    z = torch.maximum(torch.minimum(z, s), -s) / s
    return z if unit else z * half + centre


class ThresholdedModel:
    """A score model whose predictions have their x0 thresholded (``model(u_t, t)`` and
    ``on_grid(times)``, like the model it wraps).

    Args:
        model: the score model.
        kind: ``static`` or ``dynamic``.
        data_range: ``(low, high)`` of the data (images: ``(-1, 1)``).
        percentile: ``p`` of dynamic thresholding (Imagen: 0.995).
        max_scale: upper bound of the dynamic scale ``s`` (``None``: unbounded).

    Predictions that carry only CLD's velocity score (no x0) pass through unchanged.
    """

    def __init__(
        self,
        model: ScoreModel,
        kind: Thresholding,
        data_range: tuple[float, float] = (-1.0, 1.0),
        percentile: float = 0.995,
        max_scale: float | None = None,
    ) -> None:
        if kind not in ("static", "dynamic"):
            raise ValueError(f"ThresholdedModel.kind must be 'static' or 'dynamic', got {kind!r}")
        if not data_range[0] < data_range[1]:
            raise ValueError(f"data_range must have low < high, got {tuple(data_range)}")
        if not 0.0 < percentile <= 1.0:
            raise ValueError(f"threshold percentile must lie in (0, 1], got {percentile}")
        if max_scale is not None and max_scale < 1.0:
            raise ValueError(f"threshold max_scale must be >= 1 or None, got {max_scale}")
        self.model, self.kind = model, kind
        self.data_range = (float(data_range[0]), float(data_range[1]))
        self.percentile, self.max_scale = float(percentile), max_scale
        self.evaluations_per_call = int(getattr(model, "evaluations_per_call", 1))

    def threshold(self, pred: Prediction) -> Prediction:
        """``pred`` with its x0 thresholded, as an ``x0`` prediction."""
        if pred.velocity_only:
            return pred
        x0 = threshold_x0(pred.x0(), self.kind, self.data_range, self.percentile, self.max_scale)
        return Prediction(pred.u_t, pred.t, x0, pred.kernel, "x0")

    def __call__(self, u_t: Tensor, t: Tensor) -> Prediction:
        return self.threshold(self.model(u_t, t))

    def on_grid(self, times: Tensor) -> Callable[[Tensor, int], Prediction]:
        inner: GridScoreModel = on_grid(self.model, times)
        return lambda u_t, i: self.threshold(inner(u_t, i))
