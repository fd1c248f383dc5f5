"""SubVPSDE against numerical integration, Monte Carlo and its own identities."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from diffkit_example.sdes import SubVPSDE

TIMES = np.array([1e-4, 1e-3, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0])


@pytest.mark.parametrize("beta", [(0.1, 20.0), (0.05, 5.0)])
def test_kernel_matches_lyapunov_integration(beta) -> None:
    """``dPsi/dt = f Psi``, ``dSigma/dt = 2 f Sigma + g^2`` (from 0 and from a variance lam)."""
    sde = SubVPSDE(*beta)
    lam = 0.7

    def rhs(t, y):
        f = sde.drift_op(t).coef.item()
        g2 = sde.diffusion_op(t).coef.item() ** 2
        return [f * y[0], 2 * f * y[1] + g2, 2 * f * y[2] + g2]

    sol = solve_ivp(
        rhs, (0.0, 1.0), [1.0, 0.0, lam], method="DOP853", rtol=1e-12, atol=1e-14, t_eval=TIMES
    )
    assert sol.success
    t = torch.as_tensor(TIMES)
    alpha, sigma = sde.alpha(t).numpy(), sde.sigma(t).numpy()
    np.testing.assert_allclose(sol.y[0], alpha, rtol=1e-10)
    np.testing.assert_allclose(sol.y[1], sigma**2, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(sol.y[2], alpha**2 * lam + sigma**2, rtol=1e-10)
    k = sde.kernel(t)
    np.testing.assert_allclose(k.mean_op.coef.flatten().numpy(), sol.y[0], rtol=1e-10)
    np.testing.assert_allclose(k.cov.coef.flatten().numpy(), sol.y[1], rtol=1e-9, atol=1e-15)


def test_drift_and_diffusion_from_alpha_sigma() -> None:
    """Scalar identities ``f = d log alpha/dt``, ``g^2 = d sigma^2/dt - 2 f sigma^2`` (autograd)."""
    sde = SubVPSDE()
    t = torch.linspace(0.01, 1.0, 9, dtype=torch.float64, requires_grad=True)
    log_alpha = -0.5 * (sde.beta_min * t + 0.5 * (sde.beta_max - sde.beta_min) * t**2)
    var = (1 - (2 * log_alpha).exp()) ** 2
    f = torch.autograd.grad(log_alpha.sum(), t, retain_graph=True)[0]
    dvar = torch.autograd.grad(var.sum(), t)[0]
    t = t.detach()
    np.testing.assert_allclose(sde.drift_op(t).coef.flatten(), f, rtol=1e-12)
    g2 = dvar - 2 * f * var.detach()
    np.testing.assert_allclose(sde.diffusion_op(t).coef.flatten() ** 2, g2, rtol=1e-10)


def test_semigroup_noise_level_and_bounds() -> None:
    sde = SubVPSDE()
    t, s, r = (torch.tensor(x, dtype=torch.float64) for x in ([0.9, 0.5], [0.4, 0.2], [0.1, 0.0]))
    np.testing.assert_allclose(
        (sde.transition(t, s) @ sde.transition(s, r)).coef, sde.transition(t, r).coef, rtol=1e-13
    )
    cond = sde.conditional_cov(t, s).coef.flatten()
    assert (cond > 0).all()
    tt = torch.as_tensor(TIMES)
    rho = sde.noise_level(tt)
    np.testing.assert_allclose(rho, sde.sigma(tt) / sde.alpha(tt), rtol=1e-12)
    np.testing.assert_allclose(sde.t_from_noise_level(rho), tt, rtol=1e-11)
    assert (rho.diff() > 0).all()
    vp_std = (1 - sde.alpha(tt) ** 2).sqrt()
    assert (sde.sigma(tt) <= vp_std).all()  # sub-VP: never more noise than VP
    assert abs(sde.alpha(1.0).item() ** 2 - np.exp(-10.05)) < 1e-15
    with pytest.raises(ValueError, match="beta_max"):
        SubVPSDE(beta_min=1.0, beta_max=0.5)


def test_monte_carlo_forward_simulation() -> None:
    """Euler-Maruyama paths from ``x0 = 1``: mean ``alpha_t``, variance ``sigma_t^2``."""
    sde = SubVPSDE()
    gen = torch.Generator().manual_seed(0)
    n, steps = 20_000, 1000
    grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    drift = (sde.drift_op(grid[:-1]).coef.flatten() * grid.diff()).tolist()  # f h
    noise = (sde.diffusion_op(grid[:-1]).coef.flatten() * grid.diff().sqrt()).tolist()  # g sqrt(h)
    x = torch.ones(n, dtype=torch.float64)
    checked = []
    for i in range(steps):
        x = x + drift[i] * x + noise[i] * torch.randn(n, generator=gen, dtype=x.dtype)
        if i + 1 in (300, steps):
            t = grid[i + 1].item()
            alpha, sigma = sde.alpha(t).item(), sde.sigma(t).item()
            # Monte Carlo error (3 standard errors) + the O(h) Euler-Maruyama bias
            assert abs(x.mean().item() - alpha) < 3 * sigma / np.sqrt(n) + 2e-3 * alpha
            assert abs(x.var().item() / sigma**2 - 1) < 3 * np.sqrt(2 / n) + 5e-3
            checked.append(t)
    assert checked == [0.3, 1.0]
