"""Ancestral sampling: draw from the forward chain's posterior at the predicted ``x_0``.

One step ``t -> s < t`` samples ``q(u_s | u_t, u_0 = x0_hat(u_t, t))`` [Ho+20, 2006.11239 eq. 7;
VDM, 2107.00630; docs/background/samplers.md#ancestral]. For a linear SDE with kernel
``u_t | u_0 ~ N(A_t u_0, S_t)`` and ``u_t | u_s ~ N(Psi(t, s) u_s, Sigma_{t|s})``, the posterior
is Gaussian with the Kalman gain ``K = S_s Psi^T S_t^{-1}`` (because
``Psi S_s Psi^T + Sigma_{t|s} = S_t``):

    mean = K u_t + (A_s - K A_t) u_0,     cov = S_s - K S_t K^T.

For scalar SDEs this is DDPM's ``alpha_{t|s} sigma_s^2 / sigma_t^2 u_t +
alpha_s sigma_{t|s}^2 / sigma_t^2 x_0`` with variance ``sigma_{t|s}^2 sigma_s^2 / sigma_t^2``.
The operators are written with :class:`~diffkit.sdes.operators.LinearOp` algebra, so the same
code runs on scalar, DCT-diagonal and 2x2-block SDEs. One model evaluation per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.samplers.base import CountingModel, Sampler, SamplerPlan
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["AncestralSampler", "posterior_coefficients"]


def _psd_sqrt(cov: LinearOp, rel_eps: float = 1e-12) -> LinearOp:
    """A lower square root of a symmetric PSD operator whose blocks may round below zero."""
    c = 0.5 * (cov.coef + cov.coef.mT)
    if cov.k == 1:
        return LinearOp(c.clamp_min(0.0).sqrt(), cov.basis)
    trace = c.diagonal(dim1=-2, dim2=-1).sum(-1).clamp_min(0.0)
    jitter = (rel_eps * trace + 1e-300)[..., None, None] * torch.eye(2, dtype=c.dtype)
    return LinearOp(c + jitter, cov.basis).cholesky()


def posterior_coefficients(sde: LinearSDE, times: Tensor) -> dict[str, LinearOp]:
    """Float64 step operators for the decreasing grid ``times`` ``(N + 1,)``.

    Returns:
        ``gain`` (``K``, acting on ``u_t``), ``data`` (``A_s - K A_t``, acting on ``x0_hat``),
        ``noise`` (a square root of ``S_s - K S_t K^T``), each with ``N`` rows.
    """
    t, s = times[:-1], times[1:]
    kt, ks = sde.kernel(t), sde.kernel(s)
    psi = sde.transition(t, s)
    gain = ks.cov @ psi.T @ kt.cov.inv()
    data = ks.mean_op - gain @ kt.mean_op
    cov = ks.cov - gain @ kt.cov @ gain.T
    return {"gain": gain, "data": data, "noise": _psd_sqrt(cov)}


class AncestralSampler(Sampler):
    """Ancestral (DDPM-posterior) sampler for any linear SDE; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid kind.
        t_min: truncation time (default: the SDE's).
        t_max: start time (default: the SDE's ``T``).
        draw_noise: draw the posterior noise (``False`` gives the posterior mean, a deterministic
            but biased sampler).
        denoise_final: end with a Tweedie step at ``t_min`` (one more NFE).
        progress: show a progress bar.
    """

    stochastic = True

    def __init__(
        self,
        steps: int = 100,
        grid: GridKind = "uniform",
        t_min: float | None = None,
        t_max: float | None = None,
        draw_noise: bool = True,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        self.draw_noise = bool(draw_noise)

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        return posterior_coefficients(sde, times)

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
        for i in range(len(plan.times) - 1):
            x0 = model.at(u, i).x0().to(u.dtype)  # the model at plan.times[i]
            u_next = c["gain"][i].apply(u) + c["data"][i].apply(x0)
            if self.draw_noise:
                u_next = u_next + c["noise"][i].apply(self.noise(u, generator))
            u = u_next
            on_step(i, u)
        return u
