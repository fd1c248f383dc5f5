"""Functional tensor train: bases vs closed forms, contraction vs a dense tensorly reference,
shapes, gradients, initialisation, and a short Adam fit."""

from __future__ import annotations

import math

import pytest
import tensorly as tl
import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.bases import BSplineBasis, LegendreBasis
from diffkit.denoisers.tensor_train import TensorTrain


def test_legendre_closed_forms_and_orthonormality() -> None:
    x = torch.linspace(-1, 1, 7, dtype=torch.float64)[:, None]
    phi = LegendreBasis(5, -1.0, 1.0)(x)[:, 0]
    z = x[:, 0]
    closed = [
        torch.ones_like(z),
        z,
        (3 * z**2 - 1) / 2,
        (5 * z**3 - 3 * z) / 2,
        (35 * z**4 - 30 * z**2 + 3) / 8,
    ]
    for k, p in enumerate(closed):
        torch.testing.assert_close(phi[:, k], math.sqrt((2 * k + 1) / 2) * p, rtol=0, atol=1e-14)
    # orthonormal on [-1, 1]: Gauss-Legendre quadrature with 10 nodes is exact to degree 19
    import numpy as np

    nodes, weights = np.polynomial.legendre.leggauss(10)
    p = LegendreBasis(6, -1.0, 1.0)(torch.tensor(nodes)[:, None])[:, 0]
    gram = p.T @ (torch.tensor(weights)[:, None] * p)
    torch.testing.assert_close(gram, torch.eye(6, dtype=torch.float64), rtol=0, atol=1e-13)
    # affine map and clamping
    b = LegendreBasis(4, 2.0, 6.0)
    torch.testing.assert_close(
        b(torch.tensor([[4.0], [9.0]], dtype=torch.float64))[:, 0, 1],
        torch.tensor([0.0, math.sqrt(1.5)], dtype=torch.float64),
    )


def test_bspline_closed_form_degree2_and_partition_of_unity() -> None:
    m, a, b = 7, -2.0, 3.0
    basis = BSplineBasis(m, a, b, degree=2, clamp=False)
    h = (b - a) / (m - 2)
    knots = basis.knots()
    assert knots.numel() == m + 3
    torch.testing.assert_close(knots[0], torch.tensor(a - 2 * h, dtype=torch.float64))
    x = torch.linspace(a - 2.5 * h, b + 2.5 * h, 301, dtype=torch.float64)
    phi = basis(x[:, None])[:, 0]

    def closed(k: int) -> torch.Tensor:
        s = (x - knots[k]) / h
        out = torch.zeros_like(s)
        out = torch.where((s >= 0) & (s < 1), s**2 / 2, out)
        out = torch.where((s >= 1) & (s < 2), (-2 * s**2 + 6 * s - 3) / 2, out)
        out = torch.where((s >= 2) & (s < 3), (3 - s) ** 2 / 2, out)
        return out

    for k in range(m):
        torch.testing.assert_close(phi[:, k], closed(k), rtol=0, atol=1e-12)
    inside = (x >= a) & (x <= b)
    torch.testing.assert_close(
        phi[inside].sum(-1), torch.ones(int(inside.sum()), dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert phi[(x < a - 2 * h) | (x > b + 2 * h)].abs().max() == 0
    # default: clamped (constant extension)
    clamped = BSplineBasis(m, a, b, degree=2)(torch.tensor([[a - 5.0], [b + 5.0]]).double())
    torch.testing.assert_close(clamped, basis(torch.tensor([[a], [b]]).double()))
    # degree 1 gives hat functions
    hat = BSplineBasis(4, 0.0, 3.0, degree=1)(torch.tensor([[1.5]], dtype=torch.float64))[0, 0]
    torch.testing.assert_close(hat, torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64))


def _dense_reference(tt: TensorTrain, u, c, cond, output=None):
    """f(u) = <A, Phi(u)> with the full coefficient tensor from tl.tt_to_tensor."""
    full = tt.dense_coefficients(output).to(torch.float64)
    feats = tt.features(u, c, cond)
    out = []
    for i in range(u.shape[0]):
        t = full
        for phi in feats:
            t = tl.tenalg.mode_dot(t, phi[i].to(torch.float64), 0)
        out.append(t)
    return torch.stack(out)


@pytest.mark.parametrize("basis", ["bspline", "legendre"])
@pytest.mark.parametrize("outputs", ["shared", "separate"])
def test_contraction_equals_dense_tensorly_reference(basis: str, outputs: str) -> None:
    spec = DenoiserSpec((3,), (3,), (3,), num_classes=2)
    tt = TensorTrain(
        spec,
        rank=3,
        basis=basis,
        num_basis=4,
        time_basis=3,
        outputs=outputs,
        init_std=0.3,
        domain=(-2.0, 2.0),
    ).double()
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    c = torch.rand(5, generator=gen, dtype=torch.float64)
    cond = torch.tensor([0, 1, -1, 1, 0])
    fast = tt(u, c, cond)
    if outputs == "shared":
        ref = _dense_reference(tt, u, c, cond)
    else:
        ref = torch.stack([_dense_reference(tt, u, c, cond, j) for j in range(3)], -1)
    assert fast.dtype == torch.float64
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("state", "out"), [((2,), (2,)), ((2, 3), (3,)), ((1, 2, 2), (1, 2, 2))])
def test_tt_shapes_gradients_and_parameter_count(state, out) -> None:
    spec = DenoiserSpec(out, state, out)
    tt = TensorTrain(spec, rank=4, num_basis=5, time_basis=6)
    y = tt(torch.randn(7, *state), torch.rand(7))
    assert y.shape == (7, *out)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tt.parameters())
    d, dy = math.prod(state), math.prod(out)
    # first (time) core 1 x 6 x 4, d - 1 inner 4 x 5 x 4, last 4 x 5 x D_y
    assert tt.num_parameters() == 6 * 4 + (d - 1) * 4 * 5 * 4 + 4 * 5 * dy


def test_tt_initialisation_is_stable_in_high_dimension() -> None:
    spec = DenoiserSpec((64,), (64,), (64,))
    for basis in ["bspline", "legendre"]:
        tt = TensorTrain(spec, rank=8, basis=basis)
        y = tt(torch.randn(16, 64), torch.rand(16))
        assert torch.isfinite(y).all() and 0 < y.abs().max() < 1.0


def test_tt_time_embedding_variant_and_determinism() -> None:
    spec = DenoiserSpec((4,), (4,), (4,))
    a = TensorTrain(spec, time="embedding", seed=3)
    b = TensorTrain(spec, time="embedding", seed=3)
    u, c = torch.randn(6, 4), torch.rand(6)
    torch.testing.assert_close(a(u, c), b(u, c), rtol=0, atol=0)
    torch.testing.assert_close(a(u[:2], c[:2]), a(u, c)[:2])
    with pytest.raises(ValueError, match="outputs"):
        TensorTrain(spec, outputs="both")  # type: ignore[arg-type]


def test_tt_fits_a_smooth_function_with_adam() -> None:
    """A rank-2 target f(t, x) = sin(pi x_1) x_2 t is fitted to small error by Adam."""
    torch.manual_seed(0)
    spec = DenoiserSpec((2,), (2,), (1,))
    tt = TensorTrain(
        spec, rank=4, basis="legendre", num_basis=6, time_basis=3, domain=(-1.0, 1.0), init_std=0.1
    )
    opt = torch.optim.Adam(tt.parameters(), lr=2e-2)
    gen = torch.Generator().manual_seed(1)
    u = torch.rand(512, 2, generator=gen) * 2 - 1
    c = torch.rand(512, generator=gen)
    f = (torch.sin(math.pi * u[:, 0]) * u[:, 1] * c)[:, None]
    for _ in range(300):
        opt.zero_grad()
        loss = (tt(u, c) - f).square().mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3 * f.square().mean().item() * 10
