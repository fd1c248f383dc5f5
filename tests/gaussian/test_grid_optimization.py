"""Optimised time grids: the gradient through the sampler's plan against central finite
differences, the reported W2 against independent computations of the same grid, and the gain
over the grid the optimiser starts from."""

from __future__ import annotations

import pytest
import torch

from diffkit.gaussian import GaussianScore, Modes, cifar10_spectrum, data_cov, propagate, w2_to_data
from diffkit.gaussian.grid_optimization import GridObjective, optimize_grid
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.heun import Heun
from diffkit.sdes.time_grids import time_grid
from diffkit.sdes.vp import VPSDE


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spectrum() -> torch.Tensor:
    """Every 24th CIFAR-10 eigenvalue (128 values over the whole range)."""
    return cifar10_spectrum()[::24].clone()


@pytest.mark.parametrize(
    "sampler",
    [DDIM(6), DEIS(6, order=2), DEIS(6, order=3, variant="rhoab"), Heun(3)],
    ids=["ddim", "deis_tab2", "deis_rhoab3", "heun"],
)
def test_gradient_matches_central_finite_differences(sampler) -> None:
    sde, lam = VPSDE(), spectrum()
    objective = GridObjective(sampler, sde, lam)
    t = time_grid(sde, sampler.steps, "log_snr", t_min=1e-3)
    tt = t.clone().requires_grad_(True)
    objective(tt).backward()
    for i in range(1, sampler.steps):
        h = 1e-6 * float(t[i])
        up, down = t.clone(), t.clone()
        up[i] += h
        down[i] -= h
        fd = (float(objective(up)) - float(objective(down))) / (2 * h)
        assert float(tt.grad[i]) == pytest.approx(fd, rel=1e-5, abs=1e-8), i
    # the parameterisation's chain (logits -> levels -> times) as well
    lam0, lam1 = objective.log_levels(t[[0, -1]])
    z = torch.randn(sampler.steps, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    zz = z.clone().requires_grad_(True)
    objective(objective.times_from_logits(zz, lam0, lam1)).backward()
    for j in range(sampler.steps):
        e = torch.zeros_like(z)
        e[j] = 1e-6
        fd = (
            float(objective(objective.times_from_logits(z + e, lam0, lam1)))
            - float(objective(objective.times_from_logits(z - e, lam0, lam1)))
        ) / 2e-6
        assert float(zz.grad[j]) == pytest.approx(fd, rel=1e-5, abs=1e-8), j


def ddim_closed_form_w2(sde: VPSDE, lam: torch.Tensor, times: torch.Tensor) -> float:
    """DDIM (eta = 0) on N(0, diag lam) data from N(0, I), by its per-mode recursion:
    ``x_s = (alpha_s alpha_t lam + sigma_s sigma_t) / (alpha_t^2 lam + sigma_t^2) x_t``."""
    a, s = sde.alpha(times), sde.sigma(times)
    m = torch.ones_like(lam)
    for i in range(len(times) - 1):
        m = m * (a[i + 1] * a[i] * lam + s[i + 1] * s[i]) / (a[i] ** 2 * lam + s[i] ** 2)
    return float(((lam.sqrt() - m.abs()) ** 2).sum().sqrt())


def test_reported_w2_matches_independent_propagations() -> None:
    sde, lam = VPSDE(), spectrum()
    result = optimize_grid(DDIM(5), sde, lam, init="karras", iterations=30)
    assert result.times.shape == (6,) and bool((result.times.diff() < 0).all())
    assert float(result.times[0]) == sde.T and float(result.times[-1]) == sde.t_min
    # 1. closed-form DDIM recursion on the same grid (start N(0, I) = the VP prior)
    assert result.value == pytest.approx(ddim_closed_form_w2(sde, lam, result.times), rel=1e-10)
    # 2. a sampler configured with the grid, through the ordinary (cached, no-grad) path
    modes = Modes(sde, (lam.numel(),))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = torch.ones(lam.numel(), 1, 1, dtype=torch.float64)
    cov, nfe = propagate(DDIM(5, grid=result.times.tolist()), sde, model, start, modes)
    assert nfe == 5
    assert float(w2_to_data(lam, cov)) == pytest.approx(result.value, rel=1e-12)


@pytest.mark.parametrize("init", ["log_snr", "karras"])
def test_optimised_grid_beats_its_initial_grid(init: str) -> None:
    sde, lam = VPSDE(), spectrum()
    result = optimize_grid(DEIS(8, order=2), sde, lam, init=init, iterations=60)
    assert result.initial_value == pytest.approx(
        float(GridObjective(DEIS(8, order=2, grid=init), sde, lam)(time_grid(sde, 8, init))),
        rel=1e-12,
    )
    assert result.value < 0.8 * result.initial_value, (result.value, result.initial_value)
    assert result.iterations > 1 and result.nfe == 8


def test_kl_metric_and_refusals() -> None:
    sde, lam = VPSDE(), spectrum()
    result = optimize_grid(DDIM(4), sde, lam, metric="kl", iterations=20)
    assert result.metric == "kl" and result.value < result.initial_value
    with pytest.raises(ValueError, match="deterministic sampler"):
        optimize_grid(EulerMaruyama(4), sde, lam)
    with pytest.raises(ValueError, match="deterministic sampler"):
        optimize_grid(DDIM(4, eta=1.0), sde, lam)
    with pytest.raises(ValueError, match="t_min > 0"):
        optimize_grid(DDIM(4, t_min=0.0, grid="uniform"), sde, lam, init="uniform")
