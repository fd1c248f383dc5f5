"""Schedules in closed form: VP (linear, cosine, DDPM), VE, blurring; grids, priors, errors."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.time_grids import GRID_KINDS, time_grid
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE

from .conftest import SDE_CASES

F64 = torch.float64


# ----------------------------------------------------------------------------- VP
def test_ddpm_table_is_discrete_alpha_bar_and_close_to_continuous() -> None:
    ddpm, lin = VPSDE(schedule="ddpm"), VPSDE()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    abar = torch.cumprod(1 - betas, 0)
    t_nodes = torch.arange(1, 1001, dtype=F64) / 1000
    assert torch.allclose(ddpm.alpha(t_nodes) ** 2, abar, rtol=1e-12, atol=0)
    assert torch.allclose(ddpm.alpha(0.0), torch.ones(1, dtype=F64))
    t = torch.linspace(0.0, 1.0, 2001, dtype=F64)
    gap = (ddpm.alpha(t) ** 2 - lin.alpha(t) ** 2).abs().max().item()
    assert 1e-5 < gap < 1.5e-3  # close, not identical (docs/background/sdes.md#vp: ~1e-3)
    # beta_i^disc ~ beta^Song(t) / N on each interval
    mid = (torch.arange(1000, dtype=F64) + 0.5) / 1000
    assert torch.allclose(ddpm.beta(mid) / 1000, betas, rtol=0.011)
    assert torch.allclose(ddpm.noise_condition(t_nodes[:3]), torch.tensor([0.0, 1, 2], dtype=F64))


def test_cosine_schedule_matches_iddpm() -> None:
    sde = VPSDE(schedule="cosine")
    s = 0.008
    t = torch.linspace(0.0, sde.T, 101, dtype=F64)
    phi = lambda x: torch.cos((x + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    assert torch.allclose(sde.alpha(t) ** 2, phi(t) / phi(torch.zeros(1, dtype=F64)), rtol=1e-12)
    # discrete iDDPM betas 1 - abar_i / abar_{i-1} ~ beta(t) / N
    n = 1000
    ti = torch.arange(1, 900, dtype=F64) / n
    disc = 1 - phi(ti) / phi(ti - 1 / n)
    # -log(1 - beta_i) = int beta over the step ~ beta(midpoint) / N
    assert torch.allclose(-torch.log1p(-disc), sde.beta(ti - 0.5 / n) / n, rtol=1e-4)
    with pytest.raises(ValueError, match="T must be < 1"):
        VPSDE(schedule="cosine", T=1.0)


def test_drift_and_diffusion_match_alpha_sigma() -> None:
    """f = d log alpha / dt, g^2 = d sigma^2/dt - 2 f sigma^2 (catches the factor-2 beta mix-up)."""
    h = 1e-6
    t = torch.tensor([0.0537, 0.3011, 0.6123, 0.9007], dtype=F64)  # off the DDPM nodes
    sdes = [VPSDE(), VPSDE(schedule="cosine"), VPSDE(schedule="ddpm"), VESDE(), VESDE("edm")]
    for sde in sdes:
        tt = t * sde.T
        hh = h * sde.T

        def log_a(x, sde=sde):
            return sde.kernel(x).mean_op.coef[:, 0, 0].log()

        def var(x, sde=sde):
            return sde.kernel(x).cov.coef[:, 0, 0]

        f = (log_a(tt + hh) - log_a(tt - hh)) / (2 * hh)
        g2 = (var(tt + hh) - var(tt - hh)) / (2 * hh) - 2 * f * var(tt)
        assert torch.allclose(sde.drift_op(tt).coef[:, 0, 0], f, rtol=1e-6, atol=1e-8)
        assert torch.allclose(sde.diffusion_op(tt).coef[:, 0, 0] ** 2, g2, rtol=1e-6)


# ----------------------------------------------------------------------------- VE
def test_ve_kernels() -> None:
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    geo = VESDE()
    sig = 0.01 * 5000.0**t
    assert torch.allclose(geo.kernel(t).cov.coef[:, 0, 0], sig**2 - 1e-4, rtol=1e-12, atol=1e-18)
    assert torch.allclose(VESDE(exact_kernel=False).noise_level(t), sig, rtol=1e-12)
    edm = VESDE("edm")
    assert edm.T == 80.0 and edm.t_min == 0.002
    te = torch.tensor([0.002, 1.0, 80.0], dtype=F64)
    assert torch.equal(edm.noise_level(te), te) and torch.equal(edm.t_from_noise_level(te), te)
    assert edm.prior_cov().coef.item() == 80.0**2 and geo.prior_cov().coef.item() == 50.0**2


# ----------------------------------------------------------------------------- blur
def test_blur_worked_example() -> None:
    """docs/background/sdes.md#blur: sigma_B = 10, tau = 50 at t = 0.5; d_(1,0) ~ 0.618 (32x32),
    ~0.00145 (8x8)."""
    big, small = BlurSDE((32, 32)), BlurSDE((8, 8))
    assert big.sigma_blur(0.5).item() == pytest.approx(10.0, rel=1e-12)
    d = big.dissipation(0.5)[0]
    assert d[1, 0].item() == pytest.approx(0.999 * math.exp(-50 * (math.pi / 32) ** 2) + 0.001)
    assert d[1, 0].item() == pytest.approx(0.618, abs=5e-4)
    assert d[31, 31].item() == pytest.approx(0.001, abs=1e-12)
    assert small.dissipation(0.5)[0, 1, 0].item() == pytest.approx(0.00145, abs=5e-6)
    # non-square images: lambda uses H for rows and W for columns
    assert BlurSDE(8).image_size == (8, 8)
    rect = BlurSDE((8, 16))
    assert rect.frequencies[0, 1].item() == pytest.approx(math.pi**2 / 256)


@pytest.mark.parametrize("schedule", ["hoogeboom", "gddim"])
def test_blur_linear_sde_coefficients(schedule: str) -> None:
    """Per frequency: f = d log a / dt and g^2 = d sigma^2/dt - 2 f sigma^2 >= 0."""
    sde = BlurSDE((4, 6), schedule=schedule)
    t = torch.tensor([0.1, 0.5, 0.93], dtype=F64)
    h = 1e-6

    def log_a(x):
        return sde.kernel(x).mean_op.coef[..., 0, 0].log()

    def var(x):
        return sde.kernel(x).cov.coef[:, 0, 0][:, None, None]

    f = (log_a(t + h) - log_a(t - h)) / (2 * h)
    g2 = (var(t + h) - var(t - h)) / (2 * h) - 2 * f * var(t)
    assert torch.allclose(sde.drift_op(t).coef[..., 0, 0], f, rtol=1e-6, atol=1e-6)
    assert torch.allclose(sde.diffusion_op(t).coef[..., 0, 0] ** 2, g2, rtol=1e-5, atol=1e-7)
    assert (g2 > 0).all()
    r = sde.kernel_factor_R(t)
    assert torch.allclose((r @ r.T).coef, sde.kernel(t).cov.coef)
    if schedule == "hoogeboom":  # log-SNR of the isotropic part runs from l_max to l_min
        ls = sde.log_snr(torch.tensor([0.0, 1.0], dtype=F64))
        assert torch.allclose(ls, torch.tensor([10.0, -10.0], dtype=F64), atol=1e-9)
    else:  # gDDIM's rho(t) starts at 0
        assert sde.noise_level(0.0).abs().item() < 1e-15


def test_blur_rejects_mismatched_images() -> None:
    sde = BlurSDE((8, 8))
    with pytest.raises(ValueError, match="image_size"):
        sde.check_data_shape((3, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        sde.check_data_shape((64,))
    with pytest.raises(ValueError, match="image_size"):
        sde.perturb(torch.zeros(2, 1, 4, 4), torch.full((2,), 0.5))
    sde.check_data_shape((3, 8, 8))


# ----------------------------------------------------------------------------- all SDEs
@pytest.mark.parametrize("name", list(SDE_CASES))
@pytest.mark.parametrize("kind", GRID_KINDS)
def test_time_grids(name: str, kind: str) -> None:
    sde = SDE_CASES[name][0]()
    t_min = max(sde.t_min, 1e-4 * sde.T)
    grid = time_grid(sde, 12, kind, t_min=t_min)
    assert grid.dtype == F64 and grid.shape == (13,)
    assert grid[0].item() == sde.T and grid[-1].item() == t_min
    assert (grid.diff() < 0).all()


def test_edm_karras_grid_through_ve_edm() -> None:
    """docs/background/samplers.md#grids: n = 6, sigma in [0.002, 80], rho = 7 (the appended 0 is
    the sampler's)."""
    grid = time_grid(VESDE("edm"), 5, "edm")
    expect = torch.tensor([80, 24.408342, 5.838948, 0.965417, 0.085087, 0.002], dtype=F64)
    assert torch.allclose(grid, expect, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", list(SDE_CASES))
def test_prior_logp_and_reverse_drift(name: str) -> None:
    make, shape, _ = SDE_CASES[name]
    sde = make()
    g = torch.Generator().manual_seed(0)
    n = 4
    u = sde.prior_sample((n, *sde.state_shape(shape)), generator=g, dtype=F64)
    cov = sde.prior_cov().dense(shape)[0]
    ref = torch.distributions.MultivariateNormal(torch.zeros(cov.shape[0], dtype=F64), cov)
    assert torch.allclose(sde.prior_logp(u), ref.log_prob(u.reshape(n, -1)), rtol=1e-10)
    t = torch.full((n,), 0.4 * sde.T, dtype=F64)
    score = torch.randn(u.shape, generator=g, dtype=F64)
    fd, gd = sde.drift_op(t[:1]).dense(shape)[0], sde.diffusion_op(t[:1]).dense(shape)[0]
    for lam in (0.0, 0.5, 1.0):
        expect = u.reshape(n, -1) @ fd.T - 0.5 * (1 + lam**2) * score.reshape(n, -1) @ (gd @ gd.T).T
        got = sde.reverse_drift(u, t, score, lam=lam).reshape(n, -1)
        assert torch.allclose(got, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", list(SDE_CASES))
def test_time_outside_range_is_rejected(name: str) -> None:
    sde = SDE_CASES[name][0]()
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        sde.kernel(torch.tensor([0.5, 1.5], dtype=F64) * sde.T)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        sde.kernel(-0.1)


def test_bad_parameters_name_the_field() -> None:
    cases = [
        (lambda: VPSDE(beta_min=1.0, beta_max=0.5), "beta_max"),
        (lambda: VPSDE(beta_min=-1.0), "beta_min"),
        (lambda: VPSDE(schedule="ddpm", num_steps=10), "num_steps"),
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_min=1.0, sigma_max=0.5), "sigma_max"),
        (lambda: VESDE(schedule="karras"), "schedule"),
        (lambda: CLDSDE(m_inv=-1.0), "m_inv"),
        (lambda: CLDSDE(gamma=-0.1), "gamma"),
        (lambda: CLDSDE(beta0=1.0, beta1=-2.0), "beta0"),
        (lambda: BlurSDE((0, 8)), "image_size"),
        (lambda: BlurSDE(d_min=1.0), "d_min"),
        (lambda: BlurSDE(sigma_b_max=-1.0), "sigma_b_max"),
        (lambda: BlurSDE(logsnr_min=5.0, logsnr_max=-5.0), "logsnr_max"),
    ]
    for make, field in cases:
        with pytest.raises(ValueError, match=field):
            make()


def test_cld_noise_level_depends_on_integrated_beta_only() -> None:
    a, b = CLDSDE(beta0=4.0), CLDSDE(beta0=2.0, T=2.0)
    t = torch.tensor([0.01, 0.3, 1.0], dtype=F64)
    assert torch.allclose(a.noise_level(t), b.noise_level(2 * t), rtol=1e-12)
    assert torch.allclose(a.t_from_noise_level(a.noise_level(t)), t, atol=1e-12)
