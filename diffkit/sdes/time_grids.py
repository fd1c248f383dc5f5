"""Sampling time grids, float64, decreasing from ``t_max`` (noise) to ``t_min`` (data side).

Formulas: docs/background/samplers.md#grids [DEIS code; EDM, 2206.00364, Table 1; DPM-Solver,
2206.00927].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffkit.sdes.base import LinearSDE

__all__ = ["GRID_KINDS", "GridKind", "time_grid"]

GridKind = Literal["uniform", "quadratic", "log_snr", "edm"]
GRID_KINDS: tuple[str, ...] = ("uniform", "quadratic", "log_snr", "edm")


def time_grid(
    sde: LinearSDE,
    steps: int,
    kind: GridKind = "quadratic",
    *,
    t_min: float | None = None,
    t_max: float | None = None,
    power: float = 2.0,
    rho: float = 7.0,
) -> Tensor:
    """Grid ``(steps + 1,)`` float64, ``t_0 = t_max > ... > t_steps = t_min``.

    Args:
        kind: ``uniform`` in t; ``quadratic`` (power ``power`` in t, the DEIS/CLD/BDM default);
            ``log_snr`` (uniform in ``log rho``); ``edm`` (EDM's ``rho``-spacing of the noise
            level, mapped back to t through the SDE).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t_min = sde.t_min if t_min is None else float(t_min)
    t_max = sde.T if t_max is None else float(t_max)
    if not 0 <= t_min < t_max <= sde.T:
        raise ValueError(f"need 0 <= t_min < t_max <= T={sde.T}, got t_min={t_min}, t_max={t_max}")
    i = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        t = t_max + i * (t_min - t_max)
    elif kind == "quadratic":
        a, b = t_max ** (1 / power), t_min ** (1 / power)
        t = (a + i * (b - a)) ** power
    elif kind in ("log_snr", "edm"):
        if t_min <= 0:
            raise ValueError(f"grid '{kind}' needs t_min > 0 (the noise level vanishes at t = 0)")
        lo, hi = sde.noise_level(t_min), sde.noise_level(t_max)
        if kind == "log_snr":
            levels = (hi.log() + i * (lo.log() - hi.log())).exp()
        else:
            levels = (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        t = sde.t_from_noise_level(levels)
    else:
        raise ValueError(f"unknown grid kind {kind!r}; choose one of {', '.join(GRID_KINDS)}")
    t[0], t[-1] = t_max, t_min  # exact end points, whatever the rounding inside
    return t
