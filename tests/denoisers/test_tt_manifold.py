"""Fixed-rank TT manifold: orthogonal forms, rounding, and the tangent projection against the
dense projector sum of Lubich-Oseledets-Vandereycken on a small tensor."""

from __future__ import annotations

import math

import torch

from diffkit.denoisers.tt_manifold import (
    left_orthogonalize,
    project_samples,
    project_tt,
    right_orthogonalize,
    round_tt,
    tangent_point,
    tangent_tt,
    tt_ranks,
)

F64 = torch.float64


def random_tt(modes, ranks, seed):
    g = torch.Generator().manual_seed(seed)
    rs = [1, *ranks, 1]
    return [torch.randn(rs[k], m, rs[k + 1], generator=g, dtype=F64) for k, m in enumerate(modes)]


def dense(cores):
    """The full tensor ``(m_1, .., m_n)`` of a TT with boundary ranks 1."""
    out = cores[0]
    for c in cores[1:]:
        out = torch.tensordot(out, c, dims=1)
    return out[0, ..., 0]


def dense_projection(point, z):
    """``P_T Z = sum_k P^U_{<k} (x) I (x) P^V_{>k} Z - sum_{k<n} P^U_{<=k} (x) P^V_{>k} Z``,
    with the projectors built as dense matrices from the canonical forms."""
    n, modes = len(point.U), z.shape

    def u_mat(k):  # U_{<=k} as (m_1..m_k, r_k)
        return dense([*point.U[: k + 1], torch.eye(point.U[k].shape[2], dtype=F64)[:, :, None]])

    def v_mat(k):  # V_{>=k} as (r_{k-1}, m_k..m_n)
        return dense([torch.eye(point.V[k].shape[0], dtype=F64)[None], *point.V[k:]])

    def apply(k_left: int, k_right: int) -> torch.Tensor:
        """Project the first ``k_left`` modes onto span(U_{<=k_left-1}), the modes from
        ``k_right`` on onto span(V_{>=k_right}); the modes between are left alone."""
        zz = z.reshape(math.prod(modes[:k_left]), -1)
        if k_left > 0:
            u = u_mat(k_left - 1).reshape(math.prod(modes[:k_left]), -1)
            zz = u @ (u.T @ zz)
        zz = zz.reshape(-1, math.prod(modes[k_right:]))
        if k_right < n:
            v = v_mat(k_right).reshape(-1, math.prod(modes[k_right:]))
            zz = (zz @ v.T) @ v
        return zz.reshape(modes)

    total = sum(apply(k, k + 1) for k in range(n))
    return total - sum(apply(k + 1, k + 1) for k in range(n - 1))


def densify_tangent(point, dg):
    return dense(tangent_tt(point, dg, base=False))


def test_orthogonal_forms_keep_the_tensor_and_are_orthogonal() -> None:
    cores = random_tt((3, 4, 3, 2), (2, 3, 2), 0)
    a = dense(cores)
    left, right = left_orthogonalize(cores), right_orthogonalize(cores)
    torch.testing.assert_close(dense(left), a, rtol=0, atol=1e-12)
    torch.testing.assert_close(dense(right), a, rtol=0, atol=1e-12)
    for c in left[:-1]:
        m = c.reshape(-1, c.shape[2])
        torch.testing.assert_close(m.T @ m, torch.eye(m.shape[1], dtype=F64), atol=1e-13, rtol=0)
    for c in right[1:]:
        m = c.reshape(c.shape[0], -1)
        torch.testing.assert_close(m @ m.T, torch.eye(m.shape[0], dtype=F64), atol=1e-13, rtol=0)


def test_tangent_projection_matches_the_dense_projection() -> None:
    cores = random_tt((3, 4, 3, 2), (2, 3, 2), 1)
    point = tangent_point(cores)
    g = torch.Generator().manual_seed(2)
    # a dense Z given as a TT of other ranks, and as a sum of sample outer products
    other = random_tt((3, 4, 3, 2), (3, 2, 2), 3)
    z = dense(other)
    want = dense_projection(point, z)
    got = densify_tangent(point, project_tt(point, other))
    assert (got - want).abs().max() < 1e-10
    assert want.norm() > 1.0 and (want - z).norm() > 1e-3  # a proper projection, not identity
    feats = [torch.randn(5, m, generator=g, dtype=F64) for m in (3, 4, 3, 2)]
    w = torch.randn(5, 1, generator=g, dtype=F64)
    zs = torch.einsum("bi,bj,bk,bl,b->ijkl", *feats, w[:, 0])
    got_s = densify_tangent(point, project_samples(point, feats, w))
    assert (got_s - dense_projection(point, zs)).abs().max() < 1e-10
    # idempotent: projecting a tangent vector returns it
    xi = tangent_tt(point, project_tt(point, other), base=False)
    again = densify_tangent(point, project_tt(point, xi))
    assert (again - got).abs().max() < 1e-10
    # X itself lies in its tangent space
    assert (densify_tangent(point, project_tt(point, cores)) - dense(cores)).abs().max() < 1e-10


def test_projection_with_a_trailing_output_rank() -> None:
    """The FTT's shared last core ``(r, m, D_y)``: the output index is a trailing mode."""
    cores = random_tt((3, 4, 3), (2, 3), 4)
    g = torch.Generator().manual_seed(5)
    cores[-1] = torch.randn(3, 3, 2, generator=g, dtype=F64)  # D_y = 2
    point = tangent_point(cores)
    feats = [torch.randn(6, m, generator=g, dtype=F64) for m in (3, 4, 3)]
    w = torch.randn(6, 2, generator=g, dtype=F64)
    zs = torch.einsum("bi,bj,bk,by->ijky", *feats, w)
    eye = torch.eye(2, dtype=F64)[:, :, None]
    point4 = tangent_point([*cores[:-1], cores[-1], eye])  # the output as a 4th mode
    want = dense_projection(point4, zs)
    got = dense([*tangent_tt(point, project_samples(point, feats, w), base=False), eye])
    assert (got - want).abs().max() < 1e-10


def test_rounding_returns_the_stated_ranks_and_is_exact_on_low_rank_input() -> None:
    cores = random_tt((4, 5, 4, 3), (3, 4, 3), 6)
    point = tangent_point(cores)
    step = project_tt(point, random_tt((4, 5, 4, 3), (2, 2, 2), 7))
    moved = tangent_tt(point, [0.1 * d for d in step], base=True)
    assert tt_ranks(moved) == (1, 6, 8, 6, 1)
    rounded = round_tt(moved, 3)
    assert tt_ranks(rounded) == (1, 3, 4, 3, 1) or tt_ranks(rounded) == (1, 3, 3, 3, 1)
    r4 = round_tt(moved, [3, 4, 3])
    assert tt_ranks(r4) == (1, 3, 4, 3, 1)
    # the retraction is second-order close to X + xi
    err = (dense(r4) - dense(moved)).norm() / dense(moved).norm()
    assert err < 1e-2
    # a tensor already of those ranks is reproduced exactly
    torch.testing.assert_close(dense(round_tt(cores, [3, 4, 3])), dense(cores), rtol=0, atol=1e-11)
