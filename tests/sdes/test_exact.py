"""Exact scores of Gaussian / mixture / Dirac data under every linear SDE
(docs/background/sdes.md#exact-scores)."""

from __future__ import annotations

import pytest
import torch

from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.exact import Dirac, ExactScoreModel, Gaussian, GaussianMixture, point_kernel
from diffkit.sdes.vp import VPSDE
from diffkit.testing.contracts import check_exact_score

from .conftest import SDE_CASES

NAMES = list(SDE_CASES)


def _mixture(shape: tuple[int, ...], diagonal: bool, seed: int = 0, basis=None) -> GaussianMixture:
    g = torch.Generator().manual_seed(seed)
    k = 3
    means = torch.randn((k, *shape), generator=g, dtype=torch.float64)
    size = (k, *shape) if diagonal else (k,)
    covs = 0.05 + torch.rand(size, generator=g, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.2, 0.3, 0.5]), means, covs, basis=basis)


def _dist_for(name: str, diagonal: bool) -> tuple[object, GaussianMixture]:
    make, shape, _ = SDE_CASES[name]
    sde = make()
    basis = getattr(sde, "basis", None) if diagonal else None
    return sde, _mixture(shape, diagonal, basis=basis)


def _times(sde) -> torch.Tensor:
    return torch.tensor([1e-3, 0.01, 0.1, 0.3, 0.7, 1.0], dtype=torch.float64) * sde.T


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("diagonal", [False, True])
def test_score_is_gradient_of_log_density(name: str, diagonal: bool) -> None:
    sde, gm = _dist_for(name, diagonal)
    check_exact_score(sde, gm, _times(sde).tolist(), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_denoiser_satisfies_tweedie(name: str) -> None:
    sde, gm = _dist_for(name, True)
    g = torch.Generator().manual_seed(2)
    t = _times(sde)[1:]
    u = torch.randn((t.numel(), *sde.state_shape(gm.data_shape)), generator=g, dtype=torch.float64)
    k = point_kernel(sde, t)
    tweedie = -k.cov.solve(u - k.mean_op.apply(gm.denoise(u, t, sde)))
    assert torch.allclose(gm.score(u, t, sde), tweedie, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("target", ["score", "x0", "eps"])
def test_exact_model_predictions_agree(name: str, target: str) -> None:
    sde, gm = _dist_for(name, False)
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([0.1, 0.3, 0.5, 0.9], dtype=torch.float64) * sde.T
    u = torch.randn((4, *sde.state_shape(gm.data_shape)), generator=g, dtype=torch.float64)
    pred = ExactScoreModel(gm, sde, target)(u, t)
    score = gm.score(u, t, sde)
    assert torch.allclose(pred.score(), score, rtol=1e-9, atol=1e-10)
    # x0 under the training kernel: Tweedie with that kernel
    k = sde.kernel(t)
    assert torch.allclose(-k.cov.solve(u - k.mean_op.apply(pred.x0())), score, atol=1e-8)
    if sde.block == 1:  # full-state kernel: the x0-prediction is E[u_0 | u_t]
        assert torch.allclose(pred.x0(), gm.denoise(u, t, sde), rtol=1e-8, atol=1e-8)


def test_exact_model_float32_states() -> None:
    sde = VPSDE()
    gm = _mixture((2,), False)
    u = torch.randn(3, 2)
    pred = ExactScoreModel(gm, sde, "eps")(u, torch.full((3,), 0.5, dtype=torch.float64))
    assert pred.raw.dtype == torch.float32 and pred.eps().dtype == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vp_linear", "ve_geometric", "blur_hoogeboom", "cld_dsm"])
def test_marginal_moments_match_sampling(name: str) -> None:
    """x_0 ~ mixture, lift, perturb: moments of u_t vs the mixture of marginal components."""
    sde, gm = _dist_for(name, True)
    n, t = 40000, 0.3 * sde.T
    g = torch.Generator().manual_seed(7)
    x0 = gm.sample(n, generator=g)
    ut = sde.perturb(
        sde.lift(x0, generator=g), torch.full((n,), t, dtype=torch.float64), generator=g
    )[0]
    logw, means, covs, _, _ = gm.marginal_components(t, sde)
    w = logw.exp()
    state = sde.state_shape(gm.data_shape)
    data_shape = gm.data_shape
    mean = torch.einsum("k,k...->...", w, means)
    dense = covs.dense(data_shape)  # (K, D, D)
    mflat = means.reshape(3, -1)
    second = torch.einsum("k,kij->ij", w, dense + mflat[:, :, None] * mflat[:, None, :])
    cov = second - mean.reshape(-1)[:, None] * mean.reshape(-1)[None, :]
    emp = ut.reshape(n, -1)
    se = (cov.diagonal() / n).sqrt()
    assert ((emp.mean(0) - mean.reshape(-1)).abs() < 4 * se).all()
    var = cov.diagonal()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    # mixtures have heavier tails than Gaussians: allow 6 Gaussian standard errors
    assert ((torch.cov(emp.T) - cov).abs() < 6 * se_cov).all()
    assert ut.shape == (n, *state)


def test_gaussian_matches_closed_form_vp() -> None:
    """Scalar SDE, diagonal Gaussian: s = -(x - a m)/(a^2 lam + sigma^2) per coordinate."""
    sde = VPSDE()
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    lam = torch.tensor([0.3, 2.0], dtype=torch.float64)
    dist = Gaussian(mean, lam)
    x = torch.tensor([[0.1, 0.2], [-1.0, 3.0]], dtype=torch.float64)
    t = torch.tensor([0.2, 0.6], dtype=torch.float64)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    expect = -(x - a * mean) / (a**2 * lam + s**2)
    assert torch.allclose(dist.score(x, t, sde), expect, rtol=1e-12)
    x0 = mean + a * lam * (x - a * mean) / (a**2 * lam + s**2)
    assert torch.allclose(dist.denoise(x, t, sde), x0, rtol=1e-12)


def test_gaussian_dct_diagonal_under_blur_matches_per_frequency_formula() -> None:
    """Blur with a DCT-diagonal Gaussian: per frequency s = -(u - a m)/(a^2 lam + sigma^2)."""
    sde = BlurSDE((4, 4))
    g = torch.Generator().manual_seed(0)
    lam = 0.1 + torch.rand(1, 4, 4, generator=g, dtype=torch.float64)
    dist = Gaussian(torch.zeros(1, 4, 4, dtype=torch.float64), lam, basis=sde.basis)
    u = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    a = sde.kernel(t).mean_op.coef[..., 0, 0][:, None]  # (3, 1, 4, 4) DCT coefficients
    s2 = sde.sigma(t).pow(2).reshape(3, 1, 1, 1)
    expect = sde.basis.inverse(-sde.basis.forward(u) / (a**2 * lam + s2))
    assert torch.allclose(dist.score(u, t, sde), expect, rtol=1e-10)


def test_cld_gaussian_marginal_uses_augmented_covariance() -> None:
    """CLD: data N(0, lam) has marginal covariance from (a, c) = (lam, gamma M)
    (docs/background/sdes.md#cld)."""
    sde = CLDSDE(numerical_eps=0.0)
    lam = 0.7
    dist = Gaussian(torch.zeros(1, dtype=torch.float64), lam)
    t = torch.tensor([0.05, 0.4, 1.0], dtype=torch.float64)
    _, _, covs, _, _ = dist.marginal_components(t, sde)
    expect = sde.covariance(t, lam, sde.gamma * sde.M)
    assert torch.allclose(covs.coef, expect, rtol=1e-12, atol=1e-15)


def test_dirac_score_is_kernel_score() -> None:
    sde = VPSDE()
    point = torch.tensor([1.0, -2.0], dtype=torch.float64)
    u = torch.randn(4, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    t = torch.full((4,), 0.4, dtype=torch.float64)
    k = sde.kernel(t)
    expect = -k.cov.solve(u - k.mean_op.apply(point.expand(4, 2)))
    assert torch.allclose(Dirac(point).score(u, t, sde), expect, rtol=1e-12)
    assert torch.allclose(Dirac(point).denoise(u, t, sde), point.expand(4, 2), atol=1e-12)


def test_sample_and_log_prob() -> None:
    gm = _mixture((2,), True)
    x = gm.sample(40000, generator=torch.Generator().manual_seed(5))
    assert x.shape == (40000, 2) and x.dtype == torch.float64
    second = (gm.weights[:, None] * (gm.covs + gm.means**2)).sum(0)
    var = second - gm.mean() ** 2
    se = (var / x.shape[0]).sqrt()
    assert ((x.mean(0) - gm.mean()).abs() < 4 * se).all()
    comps = torch.distributions.Normal(gm.means, gm.covs.sqrt())
    direct = torch.logsumexp(comps.log_prob(x[:50, None]).sum(-1) + gm.weights.log(), -1)
    assert torch.allclose(gm.log_prob(x[:50]), direct, rtol=1e-12)


def test_bad_mixture_arguments() -> None:
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.ones(3))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="Dirac"):
        Dirac(torch.zeros(2)).log_prob(torch.zeros(1, 2))
    pixel_diag = GaussianMixture(torch.ones(2), torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4))
    with pytest.raises(ValueError, match="basis"):
        pixel_diag.score(torch.zeros(1, 1, 4, 4), 0.5, BlurSDE((4, 4)))
