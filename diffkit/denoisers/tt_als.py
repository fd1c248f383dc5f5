"""Alternating least squares (ALS) for the functional tensor train [Holtz, Rohwedder & Schneider,
SIAM J. Sci. Comput. 2012; BE24's ALS section, which has a heading only].

The FTT output is linear in each core: with the other cores fixed,
``y_b = X_b theta`` with ``theta = vec G_k`` and ``X_b = L_k(b) (x) phi_k(b) (x) R_k(b)``,
``L_k(b) = C_1 .. C_{k-1}`` ``(r_{k-1},)`` and ``R_k(b) = C_{k+1} .. C_n`` ``(r_k, D_y)``. The
training loss on a fixed pool is a quadratic in the outputs (:mod:`diffkit.denoisers.tt_pool`:
the module's own loss, parameterisation and weighting), so each core update solves exactly

``min_theta  L(X theta) + lambda/2 ||A||_F^2 + mu_k/2 ||A - A_prev||_F^2``,

``(sum_b X_b^T H_b X_b + (lambda + mu_k) I) theta = -sum_b X_b^T g0_b + mu_k theta_prev``

(normal equations, float64, Cholesky with an LU fallback), with ``mu_k = proximal`` times the mean
diagonal of the core's Gram matrix (the proximal weight is relative: the Gram scale varies by
orders of magnitude with the number of modes and the basis). The cores other than ``G_k`` are kept
left-orthogonal before ``k`` and right-orthogonal after it (QR moves of the orthogonality centre,
which change neither the function nor ``||A||_F``), so ``||A||_F = ||G_k||_F``: the ridge and
proximal terms are gauge-invariant penalties on the whole coefficient tensor. Each core update is
the exact minimiser over its core of ``F = L + lambda/2 ||A||^2`` plus the proximal term, so
``F(new) + mu_k/2 ||A_new - A_prev||^2 <= F(prev)``: a sweep never increases ``F``.
A sweep solves cores ``1 .. n-1`` moving right, then ``n .. 2`` moving left (the centre ends at
core 1, where the next sweep starts).

Pools (design choice). Each optimiser step is one sweep on the step's batch with its draws of
``(t, eps)``, i.e. a fixed pool refreshed every sweep. Within a sweep the pool is fixed, so the
sweep is a descent method of a well-defined objective (the test checks it); across sweeps fresh
draws stop the exact solves from fitting one pool's noise. An exact solve on one pool jumps to
that pool's minimiser, so the pool must be large against the core size (batch sizes of a few
thousand for ``r^2 m`` of a few hundred), and ``mu > 0`` makes the sequence a stochastic
proximal-point method that averages over pools. Rank adaptation (two-site updates) is not done:
ranks are fixed, as for the Riemannian optimiser.

Cost per core: ``O(B (r m)^2 r^2)`` for the Gram matrix plus ``O((r^2 m)^3)`` for the solve; the
last core (``r m D_y`` unknowns) is solved per output when the Hessian is diagonal (every scalar
SDE: each output has its own weight), ``O(B D_y (r m)^2 + D_y (r m)^3)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from diffkit.denoisers.tt_manifold import (
    _qr_left,
    _qr_right,
    left_interfaces,
    right_interfaces,
    right_orthogonalize,
)
from diffkit.denoisers.tt_pool import OutputQuadratic

__all__ = ["AlternatingLeastSquares", "als_sweep", "core_normal_equations", "solve_core"]

#: Batch rows per block when accumulating Gram matrices (bounds memory at ``block (r m)^2``).
_BLOCK_ELEMENTS = 1 << 22


def _is_diagonal(h: Tensor) -> bool:
    total, diag = h.abs().sum(), torch.diagonal(h, dim1=-2, dim2=-1).abs().sum()
    return bool(total - diag <= 1e-12 * total.clamp_min(1e-300))


def core_normal_equations(
    left: Tensor, phi: Tensor, right: Tensor, g0: Tensor, hessian: Tensor
) -> tuple[Tensor, Tensor]:
    """Gram matrix ``sum_b X_b^T H_b X_b`` ``(P, P)`` and ``-sum_b X_b^T g0_b`` ``(P,)`` of one
    core, ``P = r0 m r1`` in the core's ``(r0, m, r1)`` order.

    Args:
        left: ``L_k`` ``(B, r0)``; phi: ``(B, m)``; right: ``R_k`` ``(B, r1, D_y)``;
        g0: the loss gradient at zero output ``(B, D_y)``; hessian: ``(B, D_y, D_y)``, or its
        diagonal ``(B, D_y)``.
    """
    b, r0 = left.shape
    m, r1 = phi.shape[1], right.shape[1]
    p = r0 * m
    z = (left[:, :, None] * phi[:, None, :]).reshape(b, p)
    if hessian.dim() == 2:  # diagonal Hessian given as (B, D_y)
        w = (right * hessian[:, None, :]) @ right.transpose(1, 2)  # (B, r1, r1)
    else:
        w = right @ hessian @ right.transpose(1, 2)
    gram = torch.zeros(p * p, r1 * r1, dtype=z.dtype, device=z.device)
    block = max(1, _BLOCK_ELEMENTS // (p * p))
    for s in range(0, b, block):
        zz = (z[s : s + block, :, None] * z[s : s + block, None, :]).reshape(-1, p * p)
        gram += zz.T @ w[s : s + block].reshape(-1, r1 * r1)
    gram = gram.reshape(p, p, r1, r1).permute(0, 2, 1, 3).reshape(p * r1, p * r1)
    rhs = -(z.T @ torch.einsum("bcy,by->bc", right, g0)).reshape(p * r1)
    return gram, rhs


def _solve_spd(a: Tensor, b: Tensor) -> Tensor:
    chol, info = torch.linalg.cholesky_ex(a)
    if int(info.max()) == 0:
        return torch.cholesky_solve(b, chol)
    return torch.linalg.solve(a, b)


def solve_core(
    k: int,
    cores: Sequence[Tensor],
    left: Tensor,
    phi: Tensor,
    right: Tensor,
    g0: Tensor,
    hessian: Tensor,
    ridge: float,
    proximal: float,
    diagonal: bool,
) -> Tensor:
    """The exact minimiser over core ``k`` (see the module docstring), shape of ``cores[k]``."""
    old = cores[k]
    r0, m, r1 = old.shape
    last = k == len(cores) - 1
    if last and diagonal:  # one (r0 m)-system per output, sharing nothing but the features
        b = left.shape[0]
        z = (left[:, :, None] * phi[:, None, :]).reshape(b, r0 * m)
        h = torch.diagonal(hessian, dim1=-2, dim2=-1)  # (B, D_y)
        gram = torch.einsum("by,bi,bj->yij", h, z, z)
        mu = proximal * torch.diagonal(gram, dim1=-2, dim2=-1).mean()
        gram = gram + (ridge + mu) * torch.eye(r0 * m, dtype=z.dtype, device=z.device)
        rhs = -(z.T @ g0).T + mu * old.reshape(r0 * m, r1).T  # (D_y, r0 m)
        theta = _solve_spd(gram, rhs[:, :, None])[:, :, 0]
        return theta.T.reshape(r0, m, r1)
    h = torch.diagonal(hessian, dim1=-2, dim2=-1) if diagonal else hessian
    gram, rhs = core_normal_equations(left, phi, right, g0, h)
    mu = proximal * torch.diagonal(gram).mean()
    gram = gram + (ridge + mu) * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    rhs = rhs + mu * old.reshape(-1)
    return _solve_spd(gram, rhs[:, None])[:, 0].reshape(r0, m, r1)


def _factor(core: Tensor, phi: Tensor) -> Tensor:
    return torch.einsum("amc,bm->bac", core, phi)


def als_sweep(
    cores: Sequence[Tensor],
    pool: OutputQuadratic,
    ridge: float,
    proximal: float,
    *,
    trace: Callable[[list[Tensor]], None] | None = None,
) -> list[Tensor]:
    """One ALS sweep on ``pool``; returns the new cores (right-orthogonal but the first).

    ``trace`` (tests): called with the cores after every core update.
    """
    if pool.hessian is None:
        raise ValueError("ALS needs the pool's Hessian (output_quadratic(..., hessian=True))")
    n, feats, h = len(cores), pool.feats, pool.hessian
    g0 = pool.linear_term()
    diagonal = _is_diagonal(h)
    cur = right_orthogonalize([c.to(torch.float64) for c in cores])
    lefts = left_interfaces(cur, feats)
    rights = right_interfaces(cur, feats)
    for k in range(n - 1):  # moving right
        cur[k] = solve_core(k, cur, lefts[k], feats[k], rights[k], g0, h, ridge, proximal, diagonal)
        if trace is not None:
            trace(list(cur))
        cur[k], r = _qr_left(cur[k])
        cur[k + 1] = torch.tensordot(r, cur[k + 1], dims=1)
        lefts[k + 1] = torch.einsum("ba,bac->bc", lefts[k], _factor(cur[k], feats[k]))
    for k in range(n - 1, 0, -1):  # moving left
        cur[k] = solve_core(k, cur, lefts[k], feats[k], rights[k], g0, h, ridge, proximal, diagonal)
        if trace is not None:
            trace(list(cur))
        cur[k], lmat = _qr_right(cur[k])
        cur[k - 1] = torch.tensordot(cur[k - 1], lmat, dims=1)
        rights[k - 1] = _factor(cur[k], feats[k]) @ rights[k]
    return cur


class AlternatingLeastSquares(torch.optim.Optimizer):
    """One ALS sweep per :meth:`step` over the cores of a shared-output ``TensorTrain``.

    ``step(closure)``: ``closure()`` returns the step's :class:`OutputQuadratic` (with the
    Hessian); the step replaces the cores and returns the pool (its loss is the one before the
    sweep). The optimiser has no state beyond the cores (checkpoints need nothing else).

    Args:
        net: the ``TensorTrain`` (float64 cores).
        ridge: ``lambda``; proximal: the relative proximal weight (see the module docstring).
    """

    #: the module's pool carries the Hessian of the loss in the outputs.
    needs_hessian = True

    def __init__(self, net, ridge: float = 1e-6, proximal: float = 0.0) -> None:
        super().__init__(list(net.cores), {"ridge": float(ridge), "proximal": float(proximal)})
        self.net = net

    @torch.no_grad()
    def step(self, closure: Callable[[], OutputQuadratic]) -> OutputQuadratic:  # type: ignore[override]
        pool = closure()
        group = self.param_groups[0]
        cores = group["params"]
        new = als_sweep([c.detach() for c in cores], pool, group["ridge"], group["proximal"])
        for param, value in zip(cores, new, strict=True):
            param.copy_(value.to(param.dtype))
        return pool
