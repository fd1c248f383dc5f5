"""Riemannian SGD on the manifold of fixed-rank tensor trains [Absil, Mahony & Sepulchre 2008;
Steinlechner, SIAM J. Sci. Comput. 2016; TTDE, 2108.00089; BE24's RO section, a heading only].

The FTT's coefficient tensor ``A`` (output index trailing) stays on the manifold of TT tensors of
the denoiser's ranks. One step on the step's batch:

1. orthogonalise: ``X`` in both canonical forms (``tt_manifold.tangent_point``);
2. Riemannian gradient: the Euclidean gradient of the batch loss is
   ``Z = sum_b Phi_b (x) g_b`` (``g_b``: the loss gradient in the outputs, from the module's own
   loss, :mod:`diffkit.denoisers.tt_pool`), plus ``lambda A`` (ridge); its tangent projection is
   formed sample-wise in ``O(B sum_k m r^2)`` (``tt_manifold.project_samples``);
3. direction with heavy-ball momentum: ``d = -grad + beta P_X(d_prev)``, the previous direction
   carried to the new tangent space by orthogonal projection (a vector transport);
4. step length: the loss is quadratic in the outputs and the outputs are linear along ``d``
   (before retraction), so the exact minimiser on the batch is
   ``s* = -<g, dy> / <dy, H dy>`` with ``dy_b = <d, Phi_b>`` (Hessian from the pool); the step is
   ``xi = lr s* d`` with ``lr`` in ``(0, 1]``. A fixed step size does not work here: the features'
   tensor products have norms that shrink geometrically with the number of modes (B-splines) or
   grow (Legendre), so the coefficient-space gradient of an 8-D FTT is ~1e-3 of the loss while the
   curvature is just as small; the line search makes the method free of that scale;
5. retract: ``X + xi`` as a rank-``2 r`` TT, rounded back to rank ``r`` by a truncated-SVD sweep.

No Adam-type scaling: an entrywise rescaling of the tangent components depends on the gauge of the
cores and is no longer a Riemannian gradient step; momentum with projection transport is the
standard sound choice. The previous direction (a rank-``2 r`` TT, float64) is the optimiser state,
saved in checkpoints, so a resumed run continues bit-exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffkit.denoisers.tt_manifold import (
    TangentPoint,
    evaluate_tt,
    project_samples,
    project_tt,
    round_tt,
    tangent_point,
    tangent_tt,
)
from diffkit.denoisers.tt_pool import OutputQuadratic

__all__ = ["RiemannianSGD"]


def _tangent_inner(point: TangentPoint, dg: list[torch.Tensor]) -> torch.Tensor:
    """``<X, xi>`` for a gauged tangent vector: only the last component meets ``X``."""
    return (point.U[-1] * dg[-1]).sum()


class RiemannianSGD(torch.optim.Optimizer):
    """Riemannian SGD with momentum over the cores of a shared-output ``TensorTrain``.

    ``step(closure)``: ``closure()`` returns the step's :class:`OutputQuadratic` (no Hessian
    needed); the step retracts the cores and returns the pool.

    Args:
        net: the ``TensorTrain`` (float64 cores).
        lr: fraction of the exact line-search step; momentum: ``beta``; ridge: ``lambda`` of
            ``lambda / 2 ||A||_F^2``.
    """

    #: the module's pool carries the Hessian of the loss in the outputs (line search).
    needs_hessian = True

    def __init__(self, net, lr: float = 0.5, momentum: float = 0.5, ridge: float = 0.0) -> None:
        defaults = {"lr": float(lr), "momentum": float(momentum), "ridge": float(ridge)}
        super().__init__(list(net.cores), defaults)
        self.ranks = list(net.ranks[1:-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], OutputQuadratic]) -> OutputQuadratic:  # type: ignore[override]
        pool = closure()
        group = self.param_groups[0]
        cores = group["params"]
        state = self.state[cores[0]]
        point = tangent_point([c.detach().to(torch.float64) for c in cores])
        grad = project_samples(point, pool.feats, pool.grad)
        if group["ridge"]:
            grad[-1] = grad[-1] + group["ridge"] * point.U[-1]  # P_X(X) = (0, .., 0, U_n)
        if pool.hessian is None:
            raise ValueError("RiemannianSGD needs the pool's Hessian (line search)")
        direction = [-d for d in grad]
        previous = state.get("direction")
        if previous is not None and group["momentum"]:
            moved = project_tt(point, previous)
            direction = [d + group["momentum"] * p for d, p in zip(direction, moved, strict=True)]
        dy = evaluate_tt(tangent_tt(point, direction, base=False), pool.feats)
        slope = (pool.grad * dy).sum() + group["ridge"] * _tangent_inner(point, direction)
        curvature = torch.einsum("by,byz,bz->", dy, pool.hessian, dy)
        curvature = curvature + group["ridge"] * sum((d * d).sum() for d in direction)
        if slope >= 0:  # momentum pointed uphill on this batch: restart from the gradient
            direction = [-d for d in grad]
            dy = evaluate_tt(tangent_tt(point, direction, base=False), pool.feats)
            slope = (pool.grad * dy).sum() + group["ridge"] * _tangent_inner(point, direction)
            curvature = torch.einsum("by,byz,bz->", dy, pool.hessian, dy)
            curvature = curvature + group["ridge"] * sum((d * d).sum() for d in direction)
        scale = group["lr"] * (-slope / curvature.clamp_min(1e-300)) if slope < 0 else 0.0
        direction = [scale * d for d in direction]
        if group["momentum"]:
            state["direction"] = tangent_tt(point, direction, base=False)
        new = round_tt(tangent_tt(point, direction, base=True), self.ranks)
        for param, value in zip(cores, new, strict=True):
            if param.shape != value.shape:
                raise RuntimeError(
                    f"Riemannian retraction lost rank: core {tuple(value.shape)} for "
                    f"{tuple(param.shape)} (a rank-deficient point; raise ridge or lower rank)"
                )
            param.copy_(value.to(param.dtype))
        return pool
