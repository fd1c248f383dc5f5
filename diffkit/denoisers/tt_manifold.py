"""The manifold of tensor trains of fixed ranks: orthogonalisation, rounding, tangent space.

A TT is a list of cores ``G_k`` of shape ``(r_{k-1}, m_k, r_k)`` with ``r_0 = 1``; the last rank
``r_n`` may exceed 1 and is then an extra trailing index of the tensor (the output index of the
functional tensor train's shared last core), so the tensor is
``A[k_1, .., k_n, y] = G_1[:, k_1, :] ... G_n[:, k_n, y]``.

Conventions [Oseledets, SIAM J. Sci. Comput. 2011; Lubich, Oseledets & Vandereycken, SIAM J.
Numer. Anal. 2015; Steinlechner, SIAM J. Sci. Comput. 2016]:

* *left-orthogonal* core: ``G.reshape(r_{k-1} m_k, r_k)`` has orthonormal columns;
  *right-orthogonal*: ``G.reshape(r_{k-1}, m_k r_k)`` has orthonormal rows.
* A point ``X`` of the manifold is held in both canonical forms: ``U`` (cores ``0..n-2``
  left-orthogonal, the last one carrying the norm) and ``V`` (cores ``1..n-1`` right-orthogonal,
  the first carrying the norm).
* A tangent vector is ``xi = sum_k U_1 .. U_{k-1} dG_k V_{k+1} .. V_n`` with the gauge condition
  ``U_k^L^T dG_k^L = 0`` for ``k < n`` (``L``: the left unfolding); the map from the ``dG_k`` to
  ``xi`` is then an isometry, and the orthogonal projection of a tensor ``Z`` onto the tangent
  space has ``dG_k = (I - U_k U_k^T)`` applied to the contraction of ``Z`` with ``U_{<k}`` and
  ``V_{>k}`` (no projection for the last core).
* Retraction: ``X + xi`` is a TT of ranks ``2 r`` (:func:`tangent_tt`); TT rounding
  (:func:`round_tt`: right-to-left QR, then left-to-right truncated SVD) brings it back to rank
  ``r``, a quasi-optimal approximation, hence a retraction.

Everything runs in the cores' dtype (float64 in diffkit's TT training); no loops over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "TangentPoint",
    "evaluate_tt",
    "left_orthogonalize",
    "project_samples",
    "project_tt",
    "right_orthogonalize",
    "round_tt",
    "tangent_point",
    "tangent_tt",
    "tt_ranks",
]


def tt_ranks(cores: Sequence[Tensor]) -> tuple[int, ...]:
    """``(r_0, r_1, .., r_n)`` of a TT."""
    return (cores[0].shape[0], *(c.shape[2] for c in cores))


def _qr_left(core: Tensor) -> tuple[Tensor, Tensor]:
    """``core = Q R`` with ``Q`` left-orthogonal ``(r0, m, s)`` and ``R`` ``(s, r1)``."""
    r0, m, r1 = core.shape
    q, r = torch.linalg.qr(core.reshape(r0 * m, r1))
    return q.reshape(r0, m, q.shape[1]), r


def _qr_right(core: Tensor) -> tuple[Tensor, Tensor]:
    """``core = L Q`` with ``Q`` right-orthogonal ``(s, m, r1)`` and ``L`` ``(r0, s)``."""
    r0, m, r1 = core.shape
    q, r = torch.linalg.qr(core.reshape(r0, m * r1).T)
    return q.T.reshape(q.shape[1], m, r1), r.T


def left_orthogonalize(cores: Sequence[Tensor]) -> list[Tensor]:
    """The same tensor with cores ``0..n-2`` left-orthogonal (QR sweep left to right)."""
    out = list(cores)
    for k in range(len(out) - 1):
        out[k], r = _qr_left(out[k])
        out[k + 1] = torch.tensordot(r, out[k + 1], dims=1)
    return out


def right_orthogonalize(cores: Sequence[Tensor]) -> list[Tensor]:
    """The same tensor with cores ``1..n-1`` right-orthogonal (QR sweep right to left)."""
    out = list(cores)
    for k in range(len(out) - 1, 0, -1):
        out[k], lmat = _qr_right(out[k])
        out[k - 1] = torch.tensordot(out[k - 1], lmat, dims=1)
    return out


def round_tt(cores: Sequence[Tensor], ranks: int | Sequence[int]) -> list[Tensor]:
    """TT rounding to inner ranks at most ``ranks`` (an int, or ``r_1 .. r_{n-1}``).

    Right-to-left orthogonalisation, then a left-to-right sweep of truncated SVDs; the result is
    left-orthogonal (the last core carries the norm) and quasi-optimal: its error is at most
    ``sqrt(n - 1)`` times the best approximation of those ranks [Oseledets 2011, Thm. 2.2].
    """
    n = len(cores)
    caps = [int(ranks)] * (n - 1) if isinstance(ranks, int) else [int(r) for r in ranks]
    if len(caps) != n - 1:
        raise ValueError(f"round_tt: need {n - 1} inner ranks, got {len(caps)}")
    out = right_orthogonalize(cores)
    for k in range(n - 1):
        r0, m, r1 = out[k].shape
        u, s, vh = torch.linalg.svd(out[k].reshape(r0 * m, r1), full_matrices=False)
        rk = min(caps[k], s.numel())
        out[k] = u[:, :rk].reshape(r0, m, rk)
        out[k + 1] = torch.tensordot(s[:rk, None] * vh[:rk], out[k + 1], dims=1)
    return out


@dataclass(frozen=True)
class TangentPoint:
    """A point of the fixed-rank manifold in both canonical forms (see the module docstring)."""

    U: list[Tensor]
    V: list[Tensor]


def tangent_point(cores: Sequence[Tensor]) -> TangentPoint:
    """``X`` given by any cores -> its left (``U``) and right (``V``) canonical forms."""
    return TangentPoint(left_orthogonalize(cores), right_orthogonalize(cores))


def gauge_project(point: TangentPoint, dg: list[Tensor]) -> list[Tensor]:
    """Impose ``U_k^L^T dG_k^L = 0`` for ``k < n`` (the last component is left unchanged)."""
    out = list(dg)
    for k in range(len(out) - 1):
        r0, m, r1 = point.U[k].shape
        u = point.U[k].reshape(r0 * m, r1)
        d = out[k].reshape(r0 * m, r1)
        out[k] = (d - u @ (u.T @ d)).reshape(r0, m, r1)
    return out


def project_tt(point: TangentPoint, other: Sequence[Tensor]) -> list[Tensor]:
    """Tangent components ``dG_k`` of the orthogonal projection of the TT ``other`` (same mode
    sizes and last rank ``r_n``, any inner ranks) onto the tangent space at ``point``."""
    n = len(other)
    left = [torch.ones(1, 1, dtype=other[0].dtype, device=other[0].device)]
    for k in range(n - 1):  # left[k + 1][a, a'] = U_{<=k} . Y_{<=k}
        left.append(torch.einsum("ab,amc,bmd->cd", left[k], point.U[k], other[k]))
    r_out = other[-1].shape[2]
    right = [torch.eye(r_out, dtype=other[0].dtype, device=other[0].device)]
    for k in range(n - 1, 0, -1):  # right[c, c'] over V_{>k-1} . Y_{>k-1}
        right.insert(0, torch.einsum("amc,bmd,cd->ab", point.V[k], other[k], right[0]))
    dg = [torch.einsum("ab,bmd,cd->amc", left[k], other[k], right[k]) for k in range(n)]
    return gauge_project(point, dg)


def _chain_factor(core: Tensor, phi: Tensor) -> Tensor:
    """``C(b) = sum_m G[:, m, :] phi_b^m`` ``(B, r0, r1)``."""
    return torch.einsum("amc,bm->bac", core, phi)


def left_interfaces(cores: Sequence[Tensor], feats: Sequence[Tensor]) -> list[Tensor]:
    """``L_k(b) = C_1(b) .. C_{k-1}(b)`` ``(B, r_{k-1})`` for ``k = 1..n`` (``L_1 = 1``)."""
    b = feats[0].shape[0]
    out = [torch.ones(b, 1, dtype=cores[0].dtype, device=cores[0].device)]
    for k in range(len(cores) - 1):
        out.append(torch.einsum("ba,bac->bc", out[k], _chain_factor(cores[k], feats[k])))
    return out


def right_interfaces(cores: Sequence[Tensor], feats: Sequence[Tensor]) -> list[Tensor]:
    """``R_k(b) = C_{k+1}(b) .. C_n(b)`` ``(B, r_k, r_n)`` (``R_n`` the identity)."""
    b, r_out = feats[0].shape[0], cores[-1].shape[2]
    eye = torch.eye(r_out, dtype=cores[0].dtype, device=cores[0].device)
    out = [eye.expand(b, r_out, r_out)]
    for k in range(len(cores) - 1, 0, -1):
        out.insert(0, _chain_factor(cores[k], feats[k]) @ out[0])
    return out


def evaluate_tt(cores: Sequence[Tensor], feats: Sequence[Tensor]) -> Tensor:
    """``y_b = <A, Phi_b>`` ``(B, r_n)``: the TT contracted with the features ``(B, m_k)``."""
    w = left_interfaces(cores, feats)[-1]
    return torch.einsum("ba,bac->bc", w, _chain_factor(cores[-1], feats[-1]))


def project_samples(point: TangentPoint, feats: Sequence[Tensor], weights: Tensor) -> list[Tensor]:
    """Tangent components of the projection of ``Z = sum_b Phi_b (x) w_b``, with
    ``Phi_b = phi_1(b) (x) .. (x) phi_n(b)`` (``feats[k]``: ``(B, m_k)``) and ``w_b`` ``(B, r_n)``
    the trailing (output) factor: the Euclidean gradient of a loss of the FTT's outputs, with
    ``weights`` the loss gradient in the outputs. Cost ``O(B sum_k m_k r^2)``."""
    n = len(feats)
    left = left_interfaces(point.U, feats)
    right = right_interfaces(point.V, feats)
    dg = []
    for k in range(n):
        rw = torch.einsum("bcy,by->bc", right[k], weights)
        dg.append(torch.einsum("ba,bm,bc->amc", left[k], feats[k], rw))
    return gauge_project(point, dg)


def tangent_tt(point: TangentPoint, dg: Sequence[Tensor], *, base: bool) -> list[Tensor]:
    """The tangent vector ``xi`` (``base=True``: ``X + xi``) as a TT of inner ranks ``2 r``.

    Cores: ``[dG_1, U_1]``, then ``[[V_k, 0], [dG_k, U_k]]``, last ``[[V_n], [dG_n (+ U_n)]]``.
    """
    n = len(dg)
    last_u = point.U[-1] + dg[-1] if base else dg[-1]
    if n == 1:
        return [last_u]
    out = [torch.cat([dg[0], point.U[0]], dim=2)]
    for k in range(1, n - 1):
        v, u, d = point.V[k], point.U[k], dg[k]
        top = torch.cat([v, v.new_zeros(v.shape[0], v.shape[1], u.shape[2])], 2)
        bottom = torch.cat([d, u], dim=2)
        out.append(torch.cat([top, bottom], dim=0))
    out.append(torch.cat([point.V[-1], last_u], dim=0))
    return out
