"""DDIM with the eta family, written with the SDE's operators [DDIM, 2010.02502 eq. 12].

With the kernel ``u_t = A_t u_0 + K_t eps`` (``A_t = Psi(t, 0)``, ``K_t`` the kernel's scale),
one step from ``t`` to ``s < t`` denoises with ``K_t``, transports with ``Psi(s, t)`` and
re-noises (docs/background/samplers.md#ddim, operator form)::

    u_s = Psi(s, t) (u_t - K_t eps) + K'_s eps + P^{1/2} z,   K'_s = chol(Sigma_s - P),
    P = eta^2 (Sigma_s - Sigma_s Psi(t, s)^T Sigma_t^{-1} Psi(t, s) Sigma_s)

``P / eta^2`` is the covariance of ``q(u_s | u_t, u_0)``; every marginal ``q(u_s | u_0)`` is
kept for any eta. For scalar SDEs this is the classic rule ``x_s = alpha_s x0 +
sqrt(sigma_s^2 - sbar^2) eps + sbar z`` with ``sbar = eta sigma_{t|s} sigma_s / sigma_t``;
eta = 0 is deterministic DDIM, eta = 1 the DDPM posterior (ancestral sampling).
For blurring ``K_t = sigma_t I`` (per-frequency DDIM). For CLD ``K_t`` is the kernel's Cholesky
factor ``L_t`` (gDDIM's "L" baseline); the gDDIM paper shows R_t is far better there: use the
``gddim`` sampler for that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from diffkit.samplers.base import CountingModel, Plan, Sampler, require_full_score
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["DDIM", "DDIMPlan", "ddim_coefficients", "psd_cholesky"]


@dataclass(frozen=True)
class DDIMPlan(Plan):
    """``u_{i+1} = A_i u_i + B_i eps_i [+ C_i z_i]`` on ``times`` (float64, one row per step)."""

    A: LinearOp
    B: LinearOp
    C: LinearOp | None = None


def ddim_coefficients(sde: LinearSDE, times: Tensor, eta: float) -> dict[str, LinearOp]:
    """Per-step operators (float64, one row per step) of ``u_s = A u_t + B eps + C z``."""
    t, s = times[:-1], times[1:]
    psi = sde.transition(s, t)
    kt = sde.kernel(t)
    ks = sde.kernel(s)
    if eta == 0:
        return {"A": psi, "B": ks.scale - psi @ kt.scale}
    cov_s = ks.cov
    fwd = sde.transition(t, s)  # Psi(t, s)
    gain = cov_s @ fwd.T @ kt.cov.inv()  # Sigma_s Psi(t,s)^T Sigma_t^{-1}
    post = cov_s - gain @ fwd @ cov_s
    post = LinearOp(0.5 * (post.coef + post.coef.mT), post.basis)  # exact symmetry
    p = post * (eta**2)
    keep = cov_s - p
    noise, keep_factor = psd_cholesky(p), psd_cholesky(keep)
    return {"A": psi, "B": keep_factor - psi @ kt.scale, "C": noise}


def psd_cholesky(op: LinearOp) -> LinearOp:
    """Lower Cholesky factor of positive semi-definite blocks, robust to round-off and to zero
    blocks (e.g. ``Sigma_0`` of a scalar SDE)."""
    c = op.coef
    if op.k == 1:
        return LinearOp(c.clamp_min(0.0).sqrt(), op.basis)
    lxx = c[..., 0, 0].clamp_min(0.0).sqrt()
    lvx = torch.where(lxx > 0, c[..., 1, 0] / lxx.clamp_min(1e-300), torch.zeros_like(lxx))
    lvv = (c[..., 1, 1] - lvx**2).clamp_min(0.0).sqrt()
    zero = torch.zeros_like(lxx)
    out = torch.stack([torch.stack([lxx, zero], -1), torch.stack([lvx, lvv], -1)], -2)
    return LinearOp(out, op.basis)


class DDIM(Sampler):
    """DDIM-eta [DDIM, 2010.02502]; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        eta: 0 = deterministic DDIM, 1 = DDPM posterior (ancestral); values in ``[0, 1]``.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    def __init__(
        self,
        steps: int = 50,
        grid: GridKind = "quadratic",
        t_min: float | None = None,
        t_max: float | None = None,
        eta: float = 0.0,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM.eta must lie in [0, 1], got {eta} (1 = DDPM ancestral)")
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def build_plan(self, sde: LinearSDE, times: Tensor) -> DDIMPlan:
        return DDIMPlan(times, **ddim_coefficients(sde, times, self.eta))

    def run(
        self,
        model: CountingModel,
        sde: LinearSDE,
        u: Tensor,
        plan: DDIMPlan,
        *,
        generator: torch.Generator | None,
        on_step: Callable[[int, Tensor], None],
    ) -> Tensor:
        A, B = plan.A.steps(u), plan.B.steps(u)
        C = None if plan.C is None else plan.C.steps(u)
        for i in range(len(A)):
            pred = model.at(u, i)
            require_full_score(pred, "ddim")
            u = B[i].add(A[i](u), pred.eps().to(u.dtype))
            if C is not None:
                u = C[i].add(u, self.noise(u, generator))
            on_step(i, u)
        return u
