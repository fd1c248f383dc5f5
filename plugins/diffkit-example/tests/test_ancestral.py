"""AncestralSampler on Gaussian data with its exact score: coefficients in closed form,
variance propagation, Monte Carlo and convergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffkit.prediction import Prediction
from diffkit.sdes.time_grids import time_grid
from diffkit.sdes.vp import VPSDE
from diffkit_example.samplers import AncestralSampler, posterior_coefficients
from diffkit_example.sdes import SubVPSDE

LAM = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)  # data N(0, diag LAM)


class GaussianScore:
    """Exact score of ``p_t = N(0, diag(alpha^2 LAM + sigma^2))`` for a scalar SDE."""

    def __init__(self, sde, lam: torch.Tensor) -> None:
        self.sde, self.lam = sde, lam

    def __call__(self, u: torch.Tensor, t: torch.Tensor) -> Prediction:
        k = self.sde.kernel(t)
        alpha, sigma = k.mean_op.coef[:, 0, 0, None], k.scale.coef[:, 0, 0, None]
        score = -u.double() / (alpha**2 * self.lam + sigma**2)
        return Prediction(u_t=u, t=t, raw=score.to(u.dtype), kernel=k, target="score")


def _scalars(sde, times):
    c = posterior_coefficients(sde, times)
    return {k: v.coef.flatten() for k, v in c.items()}


@pytest.mark.parametrize("sde", [SubVPSDE(), VPSDE()], ids=["subvp", "vp"])
def test_coefficients_match_ddpm_posterior(sde) -> None:
    times = time_grid(sde, 20, "quadratic")
    c = _scalars(sde, times)
    t, s = times[:-1], times[1:]
    at, st, as_, ss = sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s)
    a_ts = at / as_
    s2_ts = st**2 - a_ts**2 * ss**2
    np.testing.assert_allclose(c["gain"], a_ts * ss**2 / st**2, rtol=1e-12)
    np.testing.assert_allclose(c["data"], as_ * s2_ts / st**2, rtol=1e-10)
    np.testing.assert_allclose(c["noise"] ** 2, s2_ts * ss**2 / st**2, rtol=1e-10)


@pytest.mark.parametrize("sde", [SubVPSDE(), VPSDE()], ids=["subvp", "vp"])
def test_posterior_plus_x0_uncertainty_is_exact(sde) -> None:
    """With ``Var(x0 | u_t)`` added back, one step maps p_t exactly to p_s (every grid point)."""
    times = time_grid(sde, 15, "uniform")
    c = _scalars(sde, times)
    lam = LAM[:, None]
    var = sde.alpha(times) ** 2 * lam + sde.sigma(times) ** 2  # exact marginals, (3, N + 1)
    a, sig = sde.alpha(times[:-1]), sde.sigma(times[:-1])
    g = a * lam / var[:, :-1]  # E[x0 | u_t] = g u_t
    post = lam * sig**2 / var[:, :-1]  # Var(x0 | u_t)
    pred = (c["gain"] + c["data"] * g) ** 2 * var[:, :-1] + c["noise"] ** 2 + c["data"] ** 2 * post
    np.testing.assert_allclose(pred, var[:, 1:], rtol=1e-11)


def _propagate(sde, steps: int, lam: torch.Tensor) -> torch.Tensor:
    """Variance after the sampler (exact score, start at exact p_T), by covariance propagation."""
    times = time_grid(sde, steps, "uniform")
    c = _scalars(sde, times)
    var = sde.alpha(times[0]) ** 2 * lam + sde.sigma(times[0]) ** 2
    for i in range(steps):
        a, sig = sde.alpha(times[i]), sde.sigma(times[i])
        g = a * lam / (a**2 * lam + sig**2)
        var = (c["gain"][i] + c["data"][i] * g) ** 2 * var + c["noise"][i] ** 2
    return var


def test_sampler_variance_monte_carlo() -> None:
    sde, steps, n = SubVPSDE(), 40, 10_000
    sampler = AncestralSampler(steps=steps, grid="uniform")
    gen = torch.Generator().manual_seed(1)
    var_t = sde.alpha(sde.T) ** 2 * LAM + sde.sigma(sde.T) ** 2
    u_T = torch.randn(n, 3, generator=gen, dtype=torch.float64) * var_t.sqrt()
    out = sampler.sample(GaussianScore(sde, LAM), sde, (n, 3), generator=gen, u_T=u_T)
    assert out.nfe == steps == sampler.expected_nfe()
    assert out.x.dtype == torch.float64 and out.x.shape == (n, 3)
    predicted = _propagate(sde, steps, LAM)
    emp = out.x.var(0)
    np.testing.assert_array_less((emp / predicted - 1).abs(), 4 * math.sqrt(2 / n))
    np.testing.assert_array_less(out.x.mean(0).abs(), 4 * (predicted / n).sqrt())


def test_variance_error_is_first_order() -> None:
    """Ancestral sampling drops ``Var(x0 | u_t)`` (see above), an O(h) per-unit-time deficit:
    the final variance converges to the data's at first order."""
    sde = SubVPSDE()
    t_min = sde.t_min
    target = sde.alpha(t_min) ** 2 * LAM + sde.sigma(t_min) ** 2
    steps = [50, 100, 200, 400]
    errs = [((_propagate(sde, n, LAM) - target) / target).abs().max().item() for n in steps]
    slope = np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert -1.15 < slope < -0.75, (errs, slope)
    assert errs[-1] < 0.05


def test_generator_determinism_and_float32() -> None:
    sde = SubVPSDE()
    sampler = AncestralSampler(steps=10)
    model = GaussianScore(sde, LAM)
    a = sampler.sample(model, sde, (64, 3), generator=torch.Generator().manual_seed(3))
    b = sampler.sample(model, sde, (64, 3), generator=torch.Generator().manual_seed(3))
    assert a.x.dtype == torch.float32 and torch.equal(a.x, b.x)
    det = AncestralSampler(steps=10, draw_noise=False)
    c = det.sample(model, sde, (64, 3), generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(c.x).all() and not torch.equal(c.x, a.x)
