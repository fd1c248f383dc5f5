"""Operator-valued exponential-integrator coefficients with Lagrange-extrapolated eps.

For a step ``t -> s`` on a decreasing grid and eps values at the current and ``q`` earlier
(larger-t) grid points ``t_{i}, t_{i-1}, ..., t_{i-q}`` (grid index here increases towards
data) [DEIS, 2204.13902; gDDIM, 2206.05564 (thesis eqs. 6.13-6.15, 7.19);
docs/background/samplers.md#deis]::

    u_s = Psi(s, t) u_t + sum_j C_j eps_{i-j},
    C_j = int_t^s 1/2 Psi(s, tau) G G^T K_tau^{-T} l_j(tau) dtau,

with ``l_j`` the Lagrange basis on the nodes in the interpolation variable (``t`` for tAB,
``rho(t)`` for rhoAB, ``log rho(t)`` for logrho). ``C_j`` is computed once per (SDE, grid)
in float64 by Gauss-Legendre quadrature on the operators' coefficient tensors, so one code path
serves scalar, spectral and 2x2-block SDEs:

* 1x1 blocks (VP, VE, blurring; the factor is ``R_t = Sigma_t^{1/2}`` whether called ``kernel``
  or ``R``): the by-parts form of docs/background/samplers.md#gddim, whose order-0 part is the
  exact DDIM/gDDIM coefficient and whose remaining integral ``int Psi(s,tau) R_tau l_j'`` is
  smooth (taken in the interpolation variable for rhoAB and logrho);
* 2x2 blocks (CLD, with the Cholesky or the R factor): the integral itself.

Quadrature runs in ``y = sqrt(tau)`` (in ``rho`` for rhoAB's by-parts integral): the integrand
behaves like ``tau^{-1/2}`` near ``tau = 0`` (``K_tau^{-1} ~ sigma_tau^{-1}``) and is smooth in
``y``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from diffkit.samplers.factors import FactorKind, noise_factor
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp

__all__ = ["Variant", "exponential_coefficients", "lagrange_basis"]

Variant = Literal["tab", "rhoab", "logrho"]


def lagrange_basis(x: Tensor, nodes: Tensor, count: Tensor) -> Tensor:
    """Lagrange basis polynomials.

    Args:
        x: evaluation points ``(S, Q)``.
        nodes: ``(S, r + 1)`` nodes; only the first ``count[s]`` are used for row ``s``.
        count: ``(S,)`` number of nodes per row (1 .. r + 1).

    Returns:
        ``(S, Q, r + 1)``; column ``j >= count`` is zero.
    """
    r1 = nodes.shape[1]
    out = []
    for j in range(r1):
        lj = torch.ones_like(x)
        for k in range(r1):
            if k == j:
                continue
            # unused rows and columns divide by 1, not by a repeated node: no 0/0 in gradients
            use = ((k < count) & (j < count))[:, None]
            den = (nodes[:, j] - nodes[:, k])[:, None]
            den = torch.where(use, den, torch.ones_like(den))
            term = (x - nodes[:, k : k + 1]) / den
            lj = lj * torch.where(use, term, torch.ones_like(term))
        out.append(torch.where((j < count)[:, None], lj, torch.zeros_like(lj)))
    return torch.stack(out, -1)


def lagrange_derivative(x: Tensor, nodes: Tensor, count: Tensor) -> Tensor:
    """Derivatives of :func:`lagrange_basis` (same shapes)."""
    r1 = nodes.shape[1]
    out = []
    for j in range(r1):
        dj = torch.zeros_like(x)
        for m in range(r1):
            if m == j:
                continue
            use_m = ((m < count) & (j < count))[:, None]
            den_m = (nodes[:, j] - nodes[:, m])[:, None]
            term = 1.0 / torch.where(use_m, den_m, torch.ones_like(den_m))
            for k in range(r1):
                if k in (j, m):
                    continue
                use = ((k < count) & (j < count))[:, None]
                den = (nodes[:, j] - nodes[:, k])[:, None]
                den = torch.where(use, den, torch.ones_like(den))
                f = (x - nodes[:, k : k + 1]) / den
                term = term * torch.where(use, f, torch.ones_like(f))
            dj = dj + torch.where(use_m, term, torch.zeros_like(term))
        out.append(torch.where((j < count)[:, None], dj, torch.zeros_like(dj)))
    return torch.stack(out, -1)


def exponential_coefficients(
    sde: LinearSDE,
    times: Tensor,
    order: int,
    *,
    variant: Variant = "tab",
    factor: FactorKind = "kernel",
    nodes: int = 48,
    chunk: int = 64,
) -> dict[str, LinearOp | list[LinearOp] | list[int]]:
    """Coefficients of the multistep exponential integrator on ``times`` (float64).

    Args:
        times: decreasing grid ``(N + 1,)``.
        order: polynomial degree ``r`` (``r + 1`` eps values; order 0 = DDIM / gDDIM step).
        variant: interpolation variable, ``tab`` (time), ``rhoab`` (noise level rho) or
            ``logrho`` (``log rho``, minus half the log-SNR: diffusers' DEIS).
        factor: eps convention (``kernel``: the kernel's scale; ``R``: gDDIM's factor).
        nodes: Gauss-Legendre nodes per step.
        chunk: steps integrated at once (bounds memory for per-frequency SDEs).

    Returns:
        ``{"A": Psi(s, t) (N rows), "C": [C_0 .. C_r] (N rows each), "q": [q_i]}`` with
        ``q_i = min(r, i)`` the number of earlier values used at step ``i`` (lower order at
        the first steps, no extra NFE).
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    if variant == "logrho" and float(times.detach().min()) <= 0:
        raise ValueError(
            "the 'logrho' variant needs t_min > 0 (log rho is -inf at t = 0); set t_min, e.g. "
            "the SDE's default"
        )
    times = times.to(torch.float64)
    n = len(times) - 1
    t, s = times[:-1], times[1:]
    q = torch.clamp(torch.arange(n), max=order)
    # Nodes: the grid points t_i, t_{i-1}, ..., t_{i-r} (clamped index; unused ones masked).
    idx = (torch.arange(n)[:, None] - torch.arange(order + 1)[None, :]).clamp_min(0)
    var = _interp_variable(sde, variant)
    node_x = var(times)[idx]  # (N, r + 1)
    gx, gw = np.polynomial.legendre.leggauss(nodes)
    gx, gw = torch.from_numpy(gx), torch.from_numpy(gw)
    cs: list[list[Tensor]] = [[] for _ in range(order + 1)]
    basis = None
    by_parts = sde.block == 1
    for a in range(0, n, chunk):
        b = min(a + chunk, n)
        if by_parts:
            parts, basis = _by_parts_chunk(
                sde, t[a:b], s[a:b], node_x[a:b], q[a:b], var, variant, gx, gw
            )
        else:
            parts, basis = _direct_chunk(
                sde, t[a:b], s[a:b], node_x[a:b], q[a:b], var, factor, gx, gw
            )
        for j in range(order + 1):
            cs[j].append(parts[j])
    c_ops = [LinearOp(torch.cat(c), basis) for c in cs]
    return {"A": sde.transition(s, t), "C": c_ops, "q": q.tolist()}


def _direct_chunk(sde, t, s, node_x, q, var, factor, gx, gw) -> tuple[list[Tensor], object]:
    """``C_j = int_t^s 1/2 Psi(s,tau) G G^T K^{-T} l_j dtau`` by Gauss-Legendre in sqrt(tau)."""
    m, nodes = len(t), len(gx)
    ya, yb = s.sqrt(), t.sqrt()
    y = 0.5 * (yb - ya)[:, None] * gx[None, :] + 0.5 * (yb + ya)[:, None]
    tau = y**2
    # int_t^s 1/2 f dtau = -1/2 int f(y^2) 2y dy = -1/2 sum_k gw_k (yb - ya) y_k f(y_k^2)
    w = -0.5 * gw[None, :] * (yb - ya)[:, None] * y
    ell = lagrange_basis(var(tau.reshape(-1)).reshape(tau.shape), node_x, q + 1)
    flat = tau.reshape(-1)
    srep = s[:, None].expand_as(tau).reshape(-1)
    g = sde.diffusion_op(flat)
    integrand = sde.transition(srep, flat) @ (g @ g.T) @ noise_factor(sde, flat, factor).inv().T
    coef = integrand.coef
    coef = coef.expand(len(flat), *coef.shape[1:]).reshape(m, nodes, *coef.shape[1:])
    extra = coef.dim() - 2
    out = []
    for j in range(node_x.shape[1]):
        wj = (w * ell[..., j]).reshape(m, nodes, *([1] * extra))
        out.append((coef * wj).sum(1))
    return out, integrand.basis


def _by_parts_chunk(sde, t, s, node_x, q, var, variant, gx, gw) -> tuple[list[Tensor], object]:
    """The same coefficients for 1x1 blocks, where the factor is ``R_t = Sigma_t^{1/2}`` and
    ``d/dtau [Psi(s,tau) R_tau] = 1/2 Psi G G^T R^{-T}`` (docs/background/samplers.md#gddim, by
    parts)::

        C_j = R_s l_j(s) - Psi(s,t) R_t [j = 0] + int_s^t Psi(s,tau) R_tau l_j'(tau) dtau

    The order-0 part is then exact, and the integral (in ``sqrt(tau)`` for tAB, in ``rho`` for
    rhoAB, where ``Psi(s,tau) R_tau = alpha_s rho`` on scalar SDEs) is smooth and small.
    """
    m, nodes = len(t), len(gx)
    r_s, r_t = noise_factor(sde, s, "R"), noise_factor(sde, t, "R")
    psi = sde.transition(s, t)
    ell_s = lagrange_basis(var(s)[:, None], node_x, q + 1)[:, 0, :]  # (m, r + 1)
    if variant == "tab":
        ya, yb = s.sqrt(), t.sqrt()
        y = 0.5 * (yb - ya)[:, None] * gx[None, :] + 0.5 * (yb + ya)[:, None]
        tau = y**2
        w = gw[None, :] * (yb - ya)[:, None] * y  # dtau = 2y dy, dy = (yb - ya)/2 dx
        dell = lagrange_derivative(tau, node_x, q + 1)
    else:
        xa, xb = var(s), var(t)
        x = 0.5 * (xb - xa)[:, None] * gx[None, :] + 0.5 * (xb + xa)[:, None]
        rho = x if variant == "rhoab" else x.exp()
        tau = sde.t_from_noise_level(rho.reshape(-1)).reshape(x.shape).clamp(0.0, sde.T)
        w = 0.5 * gw[None, :] * (xb - xa)[:, None]
        dell = lagrange_derivative(x, node_x, q + 1)
    flat = tau.reshape(-1)
    srep = s[:, None].expand_as(tau).reshape(-1)
    integrand = sde.transition(srep, flat) @ noise_factor(sde, flat, "R")
    coef = integrand.coef
    coef = coef.expand(len(flat), *coef.shape[1:]).reshape(m, nodes, *coef.shape[1:])
    extra = coef.dim() - 2
    rs_op = LinearOp(r_s.coef.expand(m, *r_s.coef.shape[1:]), r_s.basis)
    head = psi @ r_t
    out = []
    for j in range(node_x.shape[1]):
        wj = (w * dell[..., j]).reshape(m, nodes, *([1] * extra))
        integral = LinearOp((coef * wj).sum(1), integrand.basis)
        cj = rs_op * ell_s[:, j] + integral
        if j == 0:
            cj = cj - head
        out.append(cj)
    basis = out[0].basis
    return [c.coef for c in _aligned(out)], basis


def _aligned(ops: list[LinearOp]) -> list[LinearOp]:
    """Bring operators to one coefficient shape (adding zero operators right-aligns modes)."""
    zero = ops[0] * 0.0
    for op in ops[1:]:
        zero = zero + op * 0.0
    return [op + zero for op in ops]


def _interp_variable(sde: LinearSDE, variant: Variant):
    if variant == "tab":
        return lambda x: x
    if variant == "rhoab":
        return sde.noise_level
    if variant == "logrho":
        return lambda x: sde.noise_level(x).log()
    raise ValueError(f"variant must be 'tab', 'rhoab' or 'logrho', got {variant!r}")
