"""DDIM and Euler-Maruyama against closed forms on a VP SDE with Gaussian data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffkit.samplers.ddim import DDIM, ddim_coefficients
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE

LAM = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)


def _exact_flow(sde: VPSDE, u_T: torch.Tensor, t: float, s: float) -> torch.Tensor:
    """Exact PF-ODE map for N(0, diag LAM): ``x / sqrt(alpha^2 lam + sigma^2)`` is constant."""
    var = lambda r: sde.alpha(r) ** 2 * LAM + sde.sigma(r) ** 2  # noqa: E731
    return u_T * (var(s) / var(t)).sqrt()


def test_ddim_matches_classic_formula() -> None:
    """Operator-form DDIM-eta equals the alpha/sigma formulas of DDIM eq. 12
    (docs/background/samplers.md#ddim)."""
    sde = VPSDE()
    times = torch.tensor([1.0, 0.7, 0.31, 0.05, 1e-3], dtype=torch.float64)
    for eta in (0.0, 0.3, 1.0):
        c = ddim_coefficients(sde, times, eta)
        t, s = times[:-1], times[1:]
        a_t, a_s, s_t, s_s = sde.alpha(t), sde.alpha(s), sde.sigma(t), sde.sigma(s)
        s_ts = (s_t**2 - (a_t / a_s) ** 2 * s_s**2).sqrt()
        sbar = eta * s_ts * s_s / s_t
        b = (s_s**2 - sbar**2).sqrt() - a_s * s_t / a_t
        torch.testing.assert_close(c["A"].coef[:, 0, 0], a_s / a_t, rtol=1e-13, atol=0)
        torch.testing.assert_close(c["B"].coef[:, 0, 0], b, rtol=1e-12, atol=1e-15)
        if eta > 0:
            torch.testing.assert_close(c["C"].coef[:, 0, 0], sbar, rtol=1e-12, atol=1e-15)


def test_ddim_worked_example_discrete_ou() -> None:
    """docs/background/samplers.md#ddim worked example (gamma = 0.05, step 11 -> 10, DDPM
    sigma-bar)."""
    g = 0.05
    alpha = lambda k: (1 - g) ** k  # noqa: E731
    var = lambda k: (1 - (1 - g) ** (2 * k)) / (1 - g / 2)  # noqa: E731
    a_ts, s2_ts = alpha(11) / alpha(10), var(11) - (alpha(11) / alpha(10)) ** 2 * var(10)
    sbar2 = s2_ts * var(10) / var(11)
    c = math.sqrt(var(10) - sbar2) / math.sqrt(var(11))
    d = alpha(10) - c * alpha(11)
    assert abs(s2_ts - 2 * g) < 1e-12
    assert abs(sbar2 - 0.094833) < 5e-7 and abs(c - 0.900914) < 5e-7 and abs(d - 0.086297) < 5e-7
    # The posterior mean coefficient of x_t from the Gaussian posterior formula.
    assert abs(c - a_ts * var(10) / var(11)) < 1e-12


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_reproduces_gaussian_covariance_propagation(
    eta: float, gaussian_score, exact_variance
) -> None:
    """The real DDIM loop on Gaussian data N(0, diag LAM) (exact score) has the output variance
    of the closed-form recurrence v <- (alpha_s/alpha_t + b sigma_t / C_t)^2 v + sbar^2, with
    b = sqrt(sigma_s^2 - sbar^2) - alpha_s sigma_t / alpha_t (docs/background/samplers.md#ddim,
    docs/background/samplers.md#exactness); for a point
    mass (LAM -> 0) started at p_T every marginal is exact."""
    sde = VPSDE()
    times = torch.tensor([1.0, 0.6, 0.2, 0.05, 1e-3], dtype=torch.float64)
    lam = torch.cat([LAM, torch.zeros(1, dtype=torch.float64)])
    a, sg = sde.alpha(times), sde.sigma(times)
    c = a[:, None] ** 2 * lam + sg[:, None] ** 2  # marginal variances (steps + 1, 4)
    var = c[0].clone()
    for i in range(len(times) - 1):
        s_ts2 = sg[i] ** 2 - (a[i] / a[i + 1]) ** 2 * sg[i + 1] ** 2
        sbar2 = eta**2 * s_ts2 * sg[i + 1] ** 2 / sg[i] ** 2
        b = (sg[i + 1] ** 2 - sbar2).sqrt() - a[i + 1] * sg[i] / a[i]
        var = (a[i + 1] / a[i] + b * sg[i] / c[i]) ** 2 * var + sbar2
    assert abs(var[-1] - c[-1, -1]) < 1e-12 * c[-1, -1]  # point mass: exact

    class _Grid(DDIM):
        def times(self, sde):
            return times

    sampler = _Grid(steps=len(times) - 1, eta=eta)
    model = gaussian_score(sde, LinearOp.diagonal(lam[None]))
    out_var, _ = exact_variance(sampler, model, sde, c[0], len(times) - 1)
    torch.testing.assert_close(out_var, var, rtol=1e-12, atol=1e-15)


def test_ddim_and_euler_first_order(gaussian_score) -> None:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.diagonal(LAM[None]))
    u_T = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
    exact = _exact_flow(sde, u_T, 1.0, 1e-3)
    steps = [20, 40, 80, 160]
    for sampler in (DDIM, lambda steps: EulerMaruyama(steps, grid="quadratic", lam=0.0)):
        errs = []
        for n in steps:
            r = sampler(steps=n).sample(model, sde, (1, 3), u_T=u_T, dtype=torch.float64)
            assert r.nfe == n
            errs.append((r.x - exact).abs().max().item())
        slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
        assert 0.85 < slope < 1.2, (errs, slope)


def test_invalid_options() -> None:
    with pytest.raises(ValueError, match="eta"):
        DDIM(eta=1.5)
    with pytest.raises(ValueError, match="lam"):
        EulerMaruyama(lam=-1.0)
