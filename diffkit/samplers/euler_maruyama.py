"""Euler-Maruyama on the reverse-time family (lam = 0: Euler on the probability-flow ODE).

One step from ``t`` to ``s < t``, ``h = t - s`` [Song+21, 2011.13456; gDDIM, 2206.05564
(thesis eq. 7.6); docs/background/samplers.md#euler-maruyama]::

    u_s = u_t - h [F(t) u_t - (1 + lam^2)/2 G G^T score(u_t, t)] + lam sqrt(h) G(t) z

Uses only ``G G^T score``, so it also runs CLD models that know only the velocity score.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.samplers.base import (
    CountingModel,
    Sampler,
    SamplerPlan,
)
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.time_grids import GridKind

__all__ = ["EulerMaruyama"]


class EulerMaruyama(Sampler):
    """Euler-Maruyama on the reverse family; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        lam: stochasticity ``lam >= 0`` (1: reverse SDE; 0: Euler on the PF-ODE).
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    def __init__(
        self,
        steps: int = 500,
        grid: GridKind = "uniform",
        t_min: float | None = None,
        t_max: float | None = None,
        lam: float = 1.0,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if lam < 0:
            raise ValueError(f"EulerMaruyama.lam must be >= 0, got {lam}")
        self.lam = float(lam)
        self.stochastic = self.lam > 0

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        t = times[:-1]
        g = sde.diffusion_op(t)
        return {"h": (times[:-1] - times[1:]).tolist(), "F": sde.drift_op(t), "G": g, "GG": g @ g.T}

    def run(
        self,
        model: CountingModel,
        sde: LinearSDE,
        u: Tensor,
        plan: SamplerPlan,
        *,
        generator: torch.Generator | None,
        on_step: Callable[[int, Tensor], None],
    ) -> Tensor:
        c = plan.coefs
        # drift = F u - a G G^T score, a = (1 + lam^2) / 2; noise lam sqrt(h) G z.
        F = c["F"].steps(u)
        GG = (c["GG"] * (-0.5 * (1.0 + self.lam**2))).steps(u)
        if self.lam > 0:
            scale = self.lam * torch.tensor(c["h"], dtype=torch.float64).sqrt()
            G = (c["G"] * scale.to(c["G"].coef.device)).steps(u)
        for i, h in enumerate(c["h"]):
            score = model.at(u, i).score().to(u.dtype)
            u = u.add(GG[i].add(F[i](u), score), alpha=-h)
            if self.lam > 0:
                u = G[i].add(u, self.noise(u, generator))
            on_step(i, u)
        return u
