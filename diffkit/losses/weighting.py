"""Loss weightings and their equivalences across targets (docs/background/losses.md#weightings).

Every named weighting except ``uniform`` is one fixed *objective*, independent of the target
the network predicts; it is defined by its **eps-space weight** ``w_eps(t)`` (the weight of
``||eps_hat - eps||^2``), equivalently the score-DSM weight ``lambda(t) = w_eps sigma^2``:

=============  ===========================================  ==================================
name           w_eps (scalar kernel, rho = sigma / alpha)    defined in
=============  ===========================================  ==================================
``sigma2``     ``1``                                         score space, ``lambda = sigma^2``
``likelihood`` ``g^2 / sigma^2 = -d log SNR / dt``           score space, ``lambda = g^2``
``edm``        ``(rho^2 + s_d^2) / s_d^2``                   x0 space (sigma-space), weight
                                                             ``(rho^2 + s_d^2) / (rho s_d)^2``
``min_snr``    ``min(1, gamma / SNR)``                       x0 space, weight ``min(SNR, gamma)``
=============  ===========================================  ==================================

``uniform`` is the unweighted MSE *in the target's own space* (``L_simple`` for ``eps``); as an
eps-weight it is ``1 / c_target``.

For a scalar kernel the same per-sample loss is written in another target with the factor
``c_target`` of :func:`target_factor`: ``w_target = w_eps c_target`` with ``c_eps = 1``,
``c_x0 = SNR = alpha^2 / sigma^2``, ``c_v = alpha^2``, ``c_score = sigma^2``, from
``||s_hat - s||^2 = sigma^-2 ||eps_hat - eps||^2 = alpha^2 sigma^-4 ||x0_hat - x0||^2`` and
``||v_hat - v||^2 = alpha^-2 ||eps_hat - eps||^2``.

Operator-valued kernels (CLD, blurring) have no scalar ``sigma``: ``sigma2`` is the unweighted
eps-MSE against the kernel's square root ``K`` (DEIS / gDDIM), ``likelihood`` is
``||G^T (s_hat - s)||^2`` (ScoreFlow's bound for a general linear SDE), and ``edm`` /
``min_snr`` use ``rho = sde.noise_level(t)`` in ``w_eps`` times that eps-MSE.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import GaussianKernel, LinearSDE

__all__ = ["Weighting", "eps_weight", "target_factor"]

Weighting = Literal["uniform", "sigma2", "likelihood", "edm", "min_snr"]
WEIGHTINGS: tuple[str, ...] = ("uniform", "sigma2", "likelihood", "edm", "min_snr")


def target_factor(target: str, alpha: Tensor, sigma: Tensor) -> Tensor:
    """``c_target`` with ``||eps_hat - eps||^2 = c_target ||target_hat - target||^2``."""
    if target == "eps":
        return torch.ones_like(sigma)
    if target == "x0":
        return (alpha / sigma) ** 2
    if target == "v":
        return alpha**2
    if target == "score":
        return sigma**2
    raise ValueError(f"unknown target {target!r}")


def scalar_diffusion_sq(sde: LinearSDE, t: Tensor) -> Tensor:
    """``g(t)^2`` of a scalar SDE, ``(B,)`` float64."""
    g = sde.diffusion_op(t)
    return g.coef[:, 0, 0] ** 2


def eps_weight(
    weighting: str,
    sde: LinearSDE,
    t: Tensor,
    kernel: GaussianKernel,
    *,
    scalar: bool,
    sigma_data: float,
    min_snr_gamma: float,
) -> Tensor:
    """``w_eps(t)``, float64 ``(B,)``, for ``sigma2 | likelihood | edm | min_snr``.

    ``likelihood`` is only given here for scalar kernels (operator kernels use the G-norm).
    """
    if scalar:
        alpha, sigma = kernel.mean_op.coef[:, 0, 0], kernel.scale.coef[:, 0, 0]
        rho = sigma / alpha
    else:
        rho = sde.noise_level(t).to(t.device)
    if weighting == "sigma2":
        return torch.ones_like(rho)
    if weighting == "likelihood":
        if not scalar:
            raise ValueError("the likelihood eps-weight is scalar only; use the G-norm")
        return scalar_diffusion_sq(sde, t).to(rho.device) / sigma**2
    if weighting == "edm":
        return (rho**2 + sigma_data**2) / sigma_data**2
    if weighting == "min_snr":
        return torch.clamp(min_snr_gamma * rho**2, max=1.0)
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
