"""gDDIM: DDIM for any linear SDE with the R_t factor [gDDIM, 2206.05564; Zhang-thesis ch. 7].

eps is taken against gDDIM's ``R_t`` (``R R^T = Sigma_t``, ``dR/dt = F R + 1/2 G G^T R^{-T}``;
``sigma_t I`` for scalar and blurring SDEs, the SDE's ``kernel_factor_R`` for CLD), i.e.
``eps_R = -R_t^T score``. Along the exact PF-ODE of Gaussian (and Dirac) data ``eps_R`` is
constant (thesis Prop. 7), which is what makes one step exact there.

* Deterministic (``lam = 0``, thesis eq. 7.18): ``u_s = Psi(s,t)(u_t - R_t eps) + R_s eps``;
  with ``order = r > 0`` the multistep predictor of thesis eq. 7.19 (DEIS coefficients with
  ``K = R``; ``r + 1`` eps values, see :mod:`diffkit.samplers.deis`).
* Stochastic (``lam > 0``, thesis Props. 8-9, docs/background/samplers.md#gddim)::

      u_s ~ N(Psi(s,t) u_t + [Psihat(s,t) - Psi(s,t)] R_t eps,  P),
      P = Sigma_s - Psihat(s,t) Sigma_t Psihat(s,t)^T,

  ``Psihat`` the transition of ``F + (1 + lam^2)/2 G G^T Sigma^{-1}``. For 1x1 blocks
  ``Psihat = Psi(t,s)^{lam^2} (sigma_s / sigma_t)^{1 + lam^2}`` in closed form; for 2x2 blocks
  (CLD) it is integrated once per grid in float64 by RK4 in ``y = sqrt(tau)``. On VP,
  ``lam = 1`` is DDIM with ``eta = 1`` (the DDPM posterior).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.prediction import Prediction
from diffkit.samplers.base import (
    CountingModel,
    Sampler,
    SamplerPlan,
    require_full_score,
)
from diffkit.samplers.ddim import psd_cholesky
from diffkit.samplers.deis import factor_rows, run_multistep
from diffkit.samplers.exponential import Variant, exponential_coefficients
from diffkit.samplers.factors import noise_factor
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["GDDIM", "stochastic_gddim_coefficients"]


def stochastic_gddim_coefficients(
    sde: LinearSDE,
    times: Tensor,
    lam: float,
    *,
    closed_form: bool | None = None,
    substeps: int = 400,
) -> dict[str, LinearOp]:
    """Operators of ``u_s = A u_t + B eps_R + C z`` (float64, one row per step).

    Args:
        closed_form: use the 1x1-block closed form (default: when the SDE has 1x1 blocks);
            ``False`` forces the RK4 integration (used to test one against the other).
        substeps: RK4 substeps per grid step (in ``sqrt(tau)``) for the integrated form.
    """
    times = times.to(torch.float64)
    t, s = times[:-1], times[1:]
    psi = sde.transition(s, t)
    r_t = noise_factor(sde, t, "R")
    cov_t, cov_s = sde.kernel(t).cov, sde.kernel(s).cov
    lam2 = lam**2
    if closed_form is None:
        closed_form = sde.block == 1
    if closed_form:
        r_s = noise_factor(sde, s, "R")
        fwd = sde.transition(t, s)
        ratio = LinearOp((r_s.coef / r_t.coef) ** (1 + lam2), r_t.basis)
        psihat = LinearOp(fwd.coef**lam2, fwd.basis) @ ratio  # 1x1 blocks: products
    else:
        psihat = _integrate_psihat(sde, t, s, 0.5 * (1 + lam2), substeps)
    p = cov_s - psihat @ cov_t @ psihat.T
    p = LinearOp(0.5 * (p.coef + p.coef.mT), p.basis)
    return {"A": psi, "B": (psihat - psi) @ r_t, "C": psd_cholesky(p)}


def _integrate_psihat(sde: LinearSDE, t: Tensor, s: Tensor, a: float, substeps: int) -> LinearOp:
    """``Psihat(s, t)`` for ``Fhat = F + a G G^T Sigma^{-1}`` by RK4 in ``y = sqrt(tau)``."""
    yt, ys = t.sqrt(), s.sqrt()
    dy = (ys - yt) / substeps  # negative: integrate from t down to s

    def rhs(y: Tensor, m: LinearOp) -> LinearOp:
        tau = y**2
        g = sde.diffusion_op(tau)
        fhat = sde.drift_op(tau) + (g @ g.T @ sde.kernel(tau).cov.inv()) * a
        return (fhat @ m) * (2 * y)

    probe = sde.transition(t, t)  # identity with the right shape, basis and block size
    m = LinearOp(torch.eye(probe.k, dtype=torch.float64).expand_as(probe.coef).clone(), probe.basis)
    m = LinearOp(m.coef.expand(len(t), *m.coef.shape[1:]).clone(), m.basis)
    y = yt.clone()
    for _ in range(substeps):
        k1 = rhs(y, m)
        k2 = rhs(y + 0.5 * dy, m + k1 * (0.5 * dy))
        k3 = rhs(y + 0.5 * dy, m + k2 * (0.5 * dy))
        k4 = rhs(y + dy, m + k3 * dy)
        m = m + (k1 + k2 * 2.0 + k3 * 2.0 + k4) * (dy / 6.0)
        y = y + dy
    return m


class GDDIM(Sampler):
    """gDDIM with the R_t factor; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        lam: stochasticity (0: deterministic; 1: the DDPM posterior on scalar SDEs).
        order: extrapolation degree r of the deterministic multistep predictor (r + 1 eps
            values; 0 = the one-step rule). Must be 0 when ``lam > 0``.
        variant: interpolation variable of the multistep predictor (``tab`` | ``rhoab`` |
            ``logrho``).
        quadrature_nodes: Gauss-Legendre nodes per step for the multistep coefficients.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    def __init__(
        self,
        steps: int = 50,
        grid: GridKind = "quadratic",
        t_min: float | None = None,
        t_max: float | None = None,
        lam: float = 0.0,
        order: int = 0,
        variant: Variant = "tab",
        quadrature_nodes: int = 48,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if lam < 0:
            raise ValueError(f"GDDIM.lam must be >= 0, got {lam}")
        if order not in (0, 1, 2, 3):
            raise ValueError(f"GDDIM.order must be 0..3 (extrapolation degree), got {order}")
        if lam > 0 and order > 0:
            raise ValueError(
                f"GDDIM: the multistep predictor (order={order}) is deterministic; use lam=0 "
                "with order > 0, or order=0 with lam > 0"
            )
        self.lam, self.order, self.variant = float(lam), int(order), variant
        self.quadrature_nodes = int(quadrature_nodes)
        self.stochastic = self.lam > 0

    def check_sde(self, sde: LinearSDE) -> None:
        noise_factor(sde, torch.full((1,), 0.5 * sde.T, dtype=torch.float64), "R")  # raises

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        if self.lam > 0:
            coefs: dict[str, Any] = stochastic_gddim_coefficients(sde, times, self.lam)
        else:
            coefs = exponential_coefficients(
                sde,
                times,
                self.order,
                variant=self.variant,
                factor="R",
                nodes=self.quadrature_nodes,
            )
        if sde.block == 2:
            coefs["K"] = noise_factor(sde, times[:-1], "R")
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
        if self.lam == 0:
            return run_multistep(model, u, plan, name="gddim", on_step=on_step)
        factors = factor_rows(plan)

        def eps_r(pred: Prediction, i: int) -> Tensor:
            require_full_score(pred, "gddim")
            return pred.eps() if factors is None else pred.eps(factors[i])

        return self.run_affine(model, u, plan, eps_r, generator=generator, on_step=on_step)
