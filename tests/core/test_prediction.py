"""Target conversions of Prediction round-trip exactly, for scalar and 2x2-block kernels."""

from __future__ import annotations

import pytest
import torch

from diffkit.prediction import Prediction
from diffkit.sdes.base import GaussianKernel
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE


def _block_kernel() -> GaussianKernel:
    mean = LinearOp.block(torch.tensor([[[0.8, 0.3], [-0.2, 0.9]]], dtype=torch.float64))
    cov = LinearOp.block(torch.tensor([[[0.5, 0.1], [0.1, 0.3]]], dtype=torch.float64))
    return GaussianKernel(mean_op=mean, cov=cov, scale=cov.cholesky())


@pytest.mark.parametrize("target", ["eps", "x0", "score", "v"])
def test_vp_conversions_round_trip(target: str) -> None:
    gen = torch.Generator().manual_seed(0)
    sde = VPSDE()
    t = torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64)
    u0 = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    u_t, eps = sde.perturb(u0, t, generator=gen)
    truth = Prediction(u_t, t, eps, sde.kernel(t), "eps")
    raw = {"eps": eps, "x0": u0, "score": truth.score(), "v": truth.v()}[target]
    pred = Prediction(u_t, t, raw, sde.kernel(t), target)
    torch.testing.assert_close(pred.eps(), eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred.x0(), u0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred.score(), truth.score(), rtol=1e-10, atol=1e-10)
    # Tweedie for the scalar kernel: score = (alpha x0 - u) / sigma^2.
    alpha, sigma = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    torch.testing.assert_close(pred.score(), (alpha * u0 - u_t) / sigma**2, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("target", ["eps", "x0", "score"])
def test_block_kernel_conversions_round_trip(target: str) -> None:
    gen = torch.Generator().manual_seed(1)
    k = _block_kernel()
    u0 = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(5, 2, 3, generator=gen, dtype=torch.float64)
    u_t = k.mean_op(u0) + k.scale(eps)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    truth_score = -k.cov.solve(u_t - k.mean_op(u0))  # -Sigma^{-1}(u - A u0)
    raw = {"eps": eps, "x0": u0, "score": truth_score}[target]
    pred = Prediction(u_t, t, raw, k, target)
    torch.testing.assert_close(pred.eps(), eps, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred.x0(), u0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(pred.score(), truth_score, rtol=1e-10, atol=1e-10)
    # eps against another factor R (R R^T = Sigma): eps_R = -R^T score = R^{-1}(u - A u0).
    r = k.scale @ LinearOp.block(
        torch.tensor([[[0.6, -0.8], [0.8, 0.6]]], dtype=torch.float64)
    )  # L times a rotation
    torch.testing.assert_close(pred.eps(r), r.solve(u_t - k.mean_op(u0)), rtol=1e-10, atol=1e-10)


def test_v_target_is_refused_for_block_kernels() -> None:
    k = _block_kernel()
    u = torch.zeros(2, 2, 3, dtype=torch.float64)
    pred = Prediction(u, torch.zeros(2, dtype=torch.float64), u, k, "v")
    with pytest.raises(ValueError, match="'v' target"):
        pred.eps()


def test_velocity_only_models_refuse_full_score_uses() -> None:
    k = _block_kernel()
    u = torch.zeros(2, 2, 3, dtype=torch.float64)
    pred = Prediction(u, torch.zeros(2, dtype=torch.float64), u, k, "score", velocity_only=True)
    with pytest.raises(ValueError, match="velocity score"):
        pred.eps()
    with pytest.raises(ValueError, match="velocity score"):
        pred.x0()
