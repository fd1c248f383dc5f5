"""Predictor-corrector sampling with a Langevin corrector [Song+21, 2011.13456, Algs. 2-3].

Per grid time ``t_i`` (docs/background/samplers.md#predictor-corrector):

* corrector, ``n_corrector`` times at fixed ``t``: ``g = score(u, t)``,
  ``step = 2 a (snr ||z|| / ||g||)^2``, ``u <- u + step g + sqrt(2 step) z`` (norms: per-sample
  L2 norms averaged over the batch, as in score_sde; ``a = Psi(s, t)^2`` for scalar SDEs, the
  continuous analogue of score_sde's ``1 - beta_i``, and 1 otherwise);
* predictor: one reverse-SDE Euler-Maruyama step (``euler_maruyama``) or one DDPM posterior
  step (``ddim``, eta = 1) from ``t_i`` to ``t_{i+1}``.

``corrector_first=True`` is score_sde's order (corrector, then predictor, at each grid time),
which never evaluates the model at the final time; ``False`` is the papers' order (predictor,
then corrector at the new time) and needs ``t_min > 0``. NFE = ``N (1 + n_corrector)``.
The Langevin corrector needs the full score, so it is undefined for velocity-only CLD models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from diffkit.samplers.base import (
    CountingModel,
    Sampler,
    SamplerPlan,
    require_full_score,
)
from diffkit.samplers.ddim import ddim_coefficients
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.time_grids import GridKind

__all__ = ["PredictorCorrector"]


class PredictorCorrector(Sampler):
    """Predictor-corrector sampler.

    Args:
        steps: number of predictor steps N.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        predictor: ``euler_maruyama`` (reverse SDE) or ``ddim`` (DDPM posterior, eta = 1).
        n_corrector: Langevin corrector steps per grid time (M).
        snr: corrector signal-to-noise ratio r (0.16 in score_sde).
        corrector_first: score_sde's order (True) or the papers' (False).
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    stochastic = True

    def __init__(
        self,
        steps: int = 1000,
        grid: GridKind = "uniform",
        t_min: float | None = None,
        t_max: float | None = None,
        predictor: Literal["euler_maruyama", "ddim"] = "euler_maruyama",
        n_corrector: int = 1,
        snr: float = 0.16,
        corrector_first: bool = True,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if predictor not in ("euler_maruyama", "ddim"):
            raise ValueError(
                "PredictorCorrector.predictor must be 'euler_maruyama' or 'ddim', "
                f"got {predictor!r}"
            )
        if n_corrector < 0 or snr <= 0:
            raise ValueError(
                f"PredictorCorrector needs n_corrector >= 0 and snr > 0, got {n_corrector}, {snr}"
            )
        self.predictor, self.n_corrector, self.snr = predictor, int(n_corrector), float(snr)
        self.corrector_first = bool(corrector_first)

    def expected_nfe(self, sde: LinearSDE | None = None) -> int:
        return self.steps * (1 + self.n_corrector) + int(self.denoise_final)

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        if not self.corrector_first and self.n_corrector > 0 and float(times[-1]) <= 0:
            raise ValueError(
                "PredictorCorrector with corrector_first=False runs the corrector at t_min, "
                "where the score is undefined for t_min = 0; set t_min > 0 or corrector_first=True"
            )
        t, s = times[:-1], times[1:]
        psi = sde.transition(s, t)
        a = psi.coef[:, 0, 0] ** 2 if psi.is_scalar else torch.ones_like(t)
        if not self.corrector_first:  # corrector at s after the step t -> s uses a of that step
            a = torch.cat([a[1:], a[-1:]])
        coefs: dict[str, Any] = {"a": a.tolist()}
        if self.predictor == "ddim":
            coefs.update(ddim_coefficients(sde, times, 1.0))
        else:
            g = sde.diffusion_op(t)
            coefs.update(F=sde.drift_op(t), G=g, GG=g @ g.T, h=(t - s).tolist())
        return coefs

    def _correct(
        self, model: CountingModel, u: Tensor, i: int, a: float, gen: torch.Generator | None
    ) -> Tensor:
        """``n_corrector`` Langevin steps at the grid's ``i``-th time."""
        for _ in range(self.n_corrector):
            pred = model.at(u, i)
            require_full_score(pred, "pc (Langevin corrector)")
            g = pred.score().to(u.dtype)
            z = self.noise(u, gen)
            g_norm = g.reshape(g.shape[0], -1).norm(dim=-1).mean()
            z_norm = z.reshape(z.shape[0], -1).norm(dim=-1).mean()
            step = 2 * a * (self.snr * z_norm / g_norm) ** 2
            u = u + step * g + torch.sqrt(2 * step) * z
        return u

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
        ops = {k: c[k].steps(u) for k in ("A", "B", "C", "F", "G", "GG") if k in c}
        times = plan.times
        for i in range(len(times) - 1):
            if self.corrector_first:
                u = self._correct(model, u, i, c["a"][i], generator)
            pred = model.at(u, i)
            z = self.noise(u, generator)
            if self.predictor == "ddim":
                require_full_score(pred, "pc with the ddim predictor")
                eps = pred.eps().to(u.dtype)
                u = ops["C"][i].add(ops["B"][i].add(ops["A"][i](u), eps), z)
            else:
                h = c["h"][i]
                score = pred.score().to(u.dtype)
                drift = ops["F"][i](u) - ops["GG"][i](score)
                u = ops["G"][i].add(u.add(drift, alpha=-h), z * math.sqrt(h))
            if not self.corrector_first:
                u = self._correct(model, u, i + 1, c["a"][i], generator)
            on_step(i, u)
        return u
