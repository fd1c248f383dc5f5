"""Exact output law of a sampler on Gaussian data, by running the real sampler code.

With data ``N(0, C)`` whose covariance commutes with the SDE's operators (diagonal in the SDE's
basis), the exact score is linear and acts on each eigendirection separately; every sampler
that is linear in the state then maps ``N(0, C_start)`` to a Gaussian ``N(0, C_out)``, with one
``k x k`` block per eigendirection (``k = 1``, CLD: ``k = 2``) [Pierret & Galerne,
2405.14250]. :func:`propagate` computes ``C_out`` exactly, without Monte Carlo:

* deterministic samplers (multistep ones included): one run on the ``k`` unit rows gives the
  total linear map ``M`` per eigendirection, and ``C_out = M C_start M^T``;
* single-step stochastic samplers (EM, DDIM eta > 0, Heun with churn): a noise source returns
  unit noise on ``k`` dedicated rows and a step callback reads each step's
  ``u' = M_k u + B_k z`` and resets the rows, so ``C <- M_k C M_k^T + B_k B_k^T`` exactly.

:func:`w2_to_data` and :func:`kl_to_data` compare the data part of ``C_out`` (CLD: the position
marginal) with the data law.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp

if TYPE_CHECKING:
    from diffkit.prediction import ScoreModel
    from diffkit.samplers.base import Sampler

__all__ = ["Modes", "kl_to_data", "mode_cov", "noise_row_variance", "propagate", "w2_to_data"]


class Modes:
    """Per-eigendirection view of states ``(B, *state)`` as ``(B, modes, k)``.

    Args:
        sde: the SDE (its basis and block size ``k``).
        data_shape: the data shape ``S`` (``modes = prod(S)``).
    """

    def __init__(self, sde: LinearSDE, data_shape: tuple[int, ...]) -> None:
        self.sde, self.data_shape, self.k = sde, tuple(data_shape), sde.block
        self.basis = sde.transition(torch.ones(1), torch.zeros(1)).basis
        self.n = math.prod(self.data_shape)

    def to_modes(self, u: Tensor) -> Tensor:
        """States ``(B, *state)`` -> ``(B, modes, k)`` in the SDE's basis."""
        if self.basis is not None:
            u = self.basis.forward(u)
        if self.k == 1:
            return u.reshape(u.shape[0], self.n, 1)
        return u.reshape(u.shape[0], 2, self.n).transpose(1, 2)

    def from_modes(self, m: Tensor) -> Tensor:
        """``(B, modes, k)`` -> states ``(B, *state)``."""
        b = m.shape[0]
        u = m.reshape(b, self.n) if self.k == 1 else m.transpose(1, 2).reshape(b, 2, self.n)
        u = u.reshape(b, *self.sde.state_shape(self.data_shape))
        if self.basis is not None:
            u = self.basis.inverse(u)
        return u

    def unit_rows(self) -> Tensor:
        """``(k, modes, k)``: row j is the unit vector e_j in every eigendirection."""
        eye = torch.eye(self.k, dtype=torch.float64)
        return eye[:, None, :].expand(self.k, self.n, self.k).clone()


def mode_cov(op: LinearOp, modes: Modes) -> Tensor:
    """A one-row operator's blocks per eigendirection, ``(modes, k, k)`` float64 (e.g. the
    SDE's ``prior_cov()`` as a start law)."""
    c = op.coef[0]
    full = c.expand(*modes.data_shape, modes.k, modes.k)
    return full.reshape(modes.n, modes.k, modes.k).to(torch.float64)


def propagate(
    sampler: Sampler,
    sde: LinearSDE,
    model: ScoreModel,
    start_cov: Tensor,
    modes: Modes,
    *,
    times: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Exact output covariance ``(modes, k, k)`` of ``sampler`` started at ``N(0, start_cov)``
    (``start_cov`` ``(modes, k, k)``) with the linear score ``model``, and the NFE used.

    ``times``: run on this grid instead of the sampler's (see :meth:`Sampler.sample`); when it
    requires grad the output covariance is differentiable w.r.t. it (deterministic samplers).
    """
    k = modes.k
    if not sampler.stochastic:
        rows = modes.from_modes(modes.unit_rows())
        res = sampler.sample(
            model, sde, (k, *modes.data_shape), u_T=rows, dtype=torch.float64, times=times
        )
        m = modes.to_modes(res.u).permute(1, 2, 0)  # (modes, k_out, k_in)
        return m @ start_cov @ m.mT, res.nfe
    unit = modes.unit_rows()
    init = torch.cat([unit, torch.zeros_like(unit)])  # k deterministic rows, k noise rows
    z_state = modes.from_modes(torch.cat([torch.zeros_like(unit), unit]))
    reset = modes.from_modes(init)
    cov = [start_cov]

    def on_step(i: int, u: Tensor) -> None:
        m = modes.to_modes(u)
        mk = m[:k].permute(1, 2, 0)  # (modes, k, k): columns = images of e_j
        bk = m[k:].permute(1, 2, 0)
        cov[0] = mk @ cov[0] @ mk.mT + bk @ bk.mT
        u.copy_(reset)

    if times is not None and times.requires_grad:
        raise ValueError(
            f"propagate: gradients w.r.t. the grid need a deterministic sampler; "
            f"{type(sampler).__name__} draws noise (set its noise to zero, e.g. eta = 0)"
        )
    sampler.noise_source = lambda u: z_state
    try:
        res = sampler.sample(
            model,
            sde,
            (2 * k, *modes.data_shape),
            u_T=reset.clone(),
            dtype=torch.float64,
            callback=on_step,
            times=times,
        )
    finally:
        sampler.noise_source = None
    return cov[0], res.nfe


def noise_row_variance(
    sampler: Sampler,
    model: ScoreModel,
    sde: LinearSDE,
    start_var: Tensor,
    draws: int | None = None,
) -> tuple[Tensor, int, Tensor]:
    """Exact per-coordinate output variance of a sampler on data ``(d,)`` whose exact score is
    diagonal (scalar SDEs), for any loop linear in ``(u_T, z_1, ..., z_draws)`` (stochastic
    multistep samplers included), through the real loop: batch row 0 carries ``sqrt(start_var)``
    and no noise, row ``k`` only the ``k``-th noise draw (a unit vector, via ``noise_source``).

    ``draws``: the number of noise draws (default: counted by a first, noise-free run).
    Returns the variance ``(d,)``, the draws made and the grid used.
    """
    d = start_var.shape[0]
    if draws is None:
        calls = [0]

        def count(u: Tensor) -> Tensor:
            calls[0] += 1
            return torch.zeros_like(u)

        sampler.noise_source = count
        try:
            sampler.sample(model, sde, (1, d), u_T=torch.zeros(1, d, dtype=torch.float64))
        finally:
            sampler.noise_source = None
        draws = calls[0]
    u_T = torch.zeros(draws + 1, d, dtype=torch.float64)
    u_T[0] = start_var.sqrt()
    made = [0]

    def unit_rows(u: Tensor) -> Tensor:
        made[0] += 1
        z = torch.zeros_like(u)
        z[made[0]] = 1.0
        return z

    sampler.noise_source = unit_rows
    try:
        res = sampler.sample(model, sde, (draws + 1, d), u_T=u_T, dtype=torch.float64)
    finally:
        sampler.noise_source = None
    return res.u.reshape(draws + 1, d).pow(2).sum(0), made[0], res.times


def _data_var(cov: Tensor) -> Tensor:
    """Output variances of the data part ``(modes,)`` from blocks ``(modes, k, k)``."""
    return cov[:, 0, 0].clamp_min(0)


def w2_to_data(lam: Tensor, cov: Tensor, weights: Tensor | None = None) -> Tensor:
    """Exact W2 between the data ``N(0, diag lam)`` and the data part of ``N(0, cov)``
    (commuting covariances): ``sqrt(sum_i w_i (sqrt(lam_i) - sqrt(c_i))^2)``, a 0-d float64
    tensor (differentiable). ``weights`` are multiplicities of compressed eigenvalues."""
    sq = (lam.reshape(-1).sqrt() - _data_var(cov).sqrt()) ** 2
    if weights is not None:
        sq = sq * weights.reshape(-1)
    return sq.sum().sqrt()


def kl_to_data(lam: Tensor, cov: Tensor, weights: Tensor | None = None) -> Tensor:
    """``KL(N(0, diag lam) || N(0, c))`` of the data law to the data part of the output law,
    ``1/2 sum_i w_i (lam_i / c_i - 1 - log(lam_i / c_i))``; needs ``lam > 0`` and ``c > 0``."""
    r = lam.reshape(-1) / _data_var(cov)
    kl = 0.5 * (r - 1 - r.log())
    if weights is not None:
        kl = kl * weights.reshape(-1)
    return kl.sum()
