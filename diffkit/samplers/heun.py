"""Heun's method on the probability-flow ODE, with EDM's optional churn [EDM, 2206.00364].

With ``v(u, t) = F(t) u - 1/2 G G^T score(u, t)`` and ``h = t - s``
(docs/background/samplers.md#heun)::

    d = v(u_t, t),  u_bar = u_t - h d,  d' = v(u_bar, s),  u_s = u_t - h/2 (d + d')

2 NFE per step, except that a step ending at ``s = 0`` (EDM's final step to sigma = 0) is a
plain Euler step: NFE = ``2N - 1`` then, ``2N`` otherwise.

Churn (EDM Alg. 2): before a step from ``t`` whose noise level ``rho(t)`` lies in
``[s_min, s_max]``, raise it to ``rho_hat = rho(t) (1 + gamma)``, ``gamma = min(s_churn / N,
sqrt(2) - 1)``, by the exact forward transition ``u_hat = Psi(t_hat, t) u + s_noise
Sigma_{t_hat|t}^{1/2} z``, then take the Heun step from ``t_hat``.
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
    step_time,
)
from diffkit.samplers.ddim import psd_cholesky
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.time_grids import GridKind, time_grid

__all__ = ["Heun"]


class Heun(Sampler):
    """Heun (2nd order) on the PF-ODE.

    Args:
        steps: number of steps N.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``); ``0`` makes the last step an
            Euler step (NFE ``2N - 1``).
        t_max: start time (default: ``T``).
        final_zero: EDM's grid convention: ``N - 1`` grid steps down to ``t_min`` followed by
            one Euler step to ``t = 0`` (NFE ``2N - 1``).
        s_churn: EDM's churn (0 = deterministic).
        s_min: lowest noise level rho at which churn applies.
        s_max: highest noise level rho at which churn applies.
        s_noise: EDM's noise inflation.
        correct_at_zero: also take the corrector on a step ending at ``t = 0`` (Pierret-Galerne's
            convention; needs a model defined at ``t = 0``, e.g. an exact score of
            non-degenerate data). Default: EDM's plain Euler last step.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    def __init__(
        self,
        steps: int = 18,
        grid: GridKind = "edm",
        t_min: float | None = None,
        t_max: float | None = None,
        final_zero: bool = False,
        s_churn: float = 0.0,
        s_min: float = 0.0,
        s_max: float = float("inf"),
        s_noise: float = 1.0,
        correct_at_zero: bool = False,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if s_churn < 0 or s_noise < 0:
            raise ValueError(f"Heun: s_churn and s_noise must be >= 0, got {s_churn}, {s_noise}")
        if final_zero and steps < 2:
            raise ValueError("Heun.final_zero needs steps >= 2")
        if final_zero and denoise_final:
            raise ValueError("Heun: final_zero ends at t = 0 already; drop denoise_final")
        self.final_zero = bool(final_zero)
        self.s_churn, self.s_min, self.s_max = float(s_churn), float(s_min), float(s_max)
        self.s_noise = float(s_noise)
        self.correct_at_zero = bool(correct_at_zero)
        self.stochastic = self.s_churn > 0

    def times(self, sde: LinearSDE) -> Tensor:
        if not self.final_zero:
            return super().times(sde)
        t = time_grid(sde, self.steps - 1, self.grid, t_min=self.t_min, t_max=self.t_max)
        return torch.cat([t, t.new_zeros(1)])

    def expected_nfe(self, sde: LinearSDE | None = None) -> int:
        """``2N - 1`` when the last step ends at ``t = 0`` (``final_zero`` or ``t_min = 0``;
        with ``t_min=None`` the SDE's ``t_min`` decides, assumed > 0 if ``sde`` is not given)."""
        t_min = self.t_min if self.t_min is not None else (sde.t_min if sde is not None else 1.0)
        ends_at_zero = (self.final_zero or t_min == 0) and not self.correct_at_zero
        return 2 * self.steps - int(ends_at_zero) + int(self.denoise_final)

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        t = times[:-1]
        n = len(t)
        gamma = torch.zeros_like(t)
        if self.s_churn > 0:
            rho = sde.noise_level(t)
            inside = (rho >= self.s_min) & (rho <= self.s_max)
            gamma = torch.where(inside, torch.full_like(t, min(self.s_churn / n, 2**0.5 - 1)), 0)
        churn = gamma > 0
        t_hat = t.clone()
        if churn.any():
            rho_hat = sde.noise_level(t[churn]) * (1 + gamma[churn])
            t_hat[churn] = sde.t_from_noise_level(rho_hat).clamp(max=sde.T)
        coefs: dict[str, Any] = {"t_hat": t_hat, "churn": churn.tolist()}
        coefs["h"] = (t_hat - times[1:]).tolist()
        for name, tt in (("t", t_hat), ("s", times[1:])):
            g = sde.diffusion_op(tt)
            coefs["F" + name], coefs["GG" + name] = sde.drift_op(tt), g @ g.T
        if churn.any():
            coefs["lift"] = sde.transition(t_hat, t)
            coefs["lift_noise"] = psd_cholesky(sde.conditional_cov(t_hat, t)) * self.s_noise
        return coefs

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
        # d = F u - 1/2 G G^T score at t_hat (predictor) and at s (corrector).
        Ft, Fs = c["Ft"].steps(u), c["Fs"].steps(u)
        GGt, GGs = (c["GGt"] * -0.5).steps(u), (c["GGs"] * -0.5).steps(u)
        lift = c["lift"].steps(u) if "lift" in c else None
        noise = c["lift_noise"].steps(u) if "lift_noise" in c else None
        times = plan.times
        for i, h in enumerate(c["h"]):
            if c["churn"][i] and lift is not None and noise is not None:
                u = noise[i].add(lift[i](u), self.noise(u, generator))
                pred = model(u, step_time(c["t_hat"], i, u))
            else:
                pred = model.at(u, i)
            d = GGt[i].add(Ft[i](u), pred.score().to(u.dtype))
            u_bar = u.add(d, alpha=-h)
            if float(times[i + 1]) == 0.0 and not self.correct_at_zero:
                u = u_bar
            else:
                score2 = model.at(u_bar, i + 1).score().to(u.dtype)
                d2 = GGs[i].add(Fs[i](u_bar), score2)
                u = u.add(d + d2, alpha=-0.5 * h)
            on_step(i, u)
        return u
