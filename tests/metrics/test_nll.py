"""PF-ODE likelihood against exact log-densities of Gaussian and Gaussian-mixture data."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.gaussian.score import ExactScoreModel
from diffkit.metrics.nll import NLL, dequantize_uniform, pf_ode_log_likelihood
from diffkit.sdes.exact import Gaussian, GaussianMixture
from diffkit.sdes.vp import VPSDE

EPS = 1e-5


def _gaussian() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([0.3, 1.5, 0.05]))


def _gmm() -> GaussianMixture:
    means = torch.tensor([[-1.0, 0.5], [1.0, -0.5], [0.0, 1.2]])
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, torch.tensor([0.05, 0.1, 0.02]))


@pytest.mark.slow
@pytest.mark.parametrize("dist_fn", [_gaussian, _gmm], ids=["gaussian", "gmm"])
@pytest.mark.parametrize("target", ["eps", "x0"])
def test_exact_divergence_matches_analytic_log_density(dist_fn, target: str) -> None:
    sde = VPSDE()
    dist = dist_fn()
    model = ExactScoreModel(dist, sde, target=target)
    x = dist.sample(12, generator=torch.Generator().manual_seed(0))
    exact = dist.marginal_log_prob(x, EPS, sde)
    p_t = lambda u: dist.marginal_log_prob(u, sde.T, sde)  # noqa: E731 - exact prior removes p_T error
    res = pf_ode_log_likelihood(model, sde, x, prior_logp=p_t, rtol=1e-7, atol=1e-7, eps=EPS)
    err = (res.logp - exact).abs().max().item()
    assert err < 1e-5, err  # measured ~1e-6 (RK45, tol 1e-7)
    assert res.nfe > 10
    rk4 = pf_ode_log_likelihood(model, sde, x, prior_logp=p_t, solver="rk4", steps=100, eps=EPS)
    assert (rk4.logp - exact).abs().max().item() < 1e-4
    assert rk4.nfe == 400
    # default N(0, I) prior: off only by the prior mismatch log p_T - log N(0, I) at u_T
    dflt = pf_ode_log_likelihood(model, sde, x, rtol=1e-7, atol=1e-7, eps=EPS)
    mismatch = sde.prior_logp(dflt.u_T) - p_t(dflt.u_T)
    assert torch.allclose(dflt.logp - exact, mismatch, atol=1e-5)


@pytest.mark.slow
def test_hutchinson_is_unbiased_on_gmm() -> None:
    sde = VPSDE()
    dist = _gmm()
    model = ExactScoreModel(dist, sde, target="eps")
    g = torch.Generator().manual_seed(1)
    x = dist.sample(16, generator=g)
    exact = dist.marginal_log_prob(x, EPS, sde)
    p_t = lambda u: dist.marginal_log_prob(u, sde.T, sde)  # noqa: E731
    reps = 100
    for noise in ("rademacher", "gaussian"):
        res = pf_ode_log_likelihood(
            model,
            sde,
            x.repeat(reps, 1),
            divergence="hutchinson",
            noise=noise,
            prior_logp=p_t,
            generator=g,
            rtol=1e-6,
            atol=1e-6,
        )
        err = res.logp.reshape(reps, -1) - exact
        assert err.std() > 1e-3  # the estimator is genuinely random on a GMM
        sem = err.std() / math.sqrt(err.numel())
        assert err.mean().abs() < 4 * sem + 1e-4, (noise, err.mean().item(), sem.item())


def test_nll_metric_bits_per_dim_and_offsets() -> None:
    sde = VPSDE()
    dist = _gaussian()
    model = ExactScoreModel(dist, sde)
    x = dist.sample(10, generator=torch.Generator().manual_seed(2))
    metric = NLL(divergence="auto", rtol=1e-6, atol=1e-6).bind(sde, model)
    metric.update(x[:4])
    metric.update(x[4:])
    out = metric.compute()
    ref = pf_ode_log_likelihood(model, sde, x, rtol=1e-6, atol=1e-6)
    bpd_ref = (-ref.logp / (3 * math.log(2))).mean()
    assert abs(out["value"].item() - bpd_ref.item()) < 1e-4
    assert out["n"].item() == 10 and out["nfe"].item() > 10
    assert NLL(dequantize="uniform").offset_bits == 7.0
    assert NLL(dequantize="uniform", data_range=(0.0, 1.0)).offset_bits == 8.0
    with pytest.raises(ValueError, match="bind"):
        NLL().update(x)


def test_uniform_dequantisation_bpd_of_uniform_density_is_eight_bits() -> None:
    # A uniform density on [-1, 1]^D has log p_Z = -D log 2, so bpd = 1 + 7 = 8 for 8-bit data
    # (every level equally likely): checks the offset and the (k + u) / 256 mapping.
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 256, (2000, 3), generator=g).double()
    x = k / 127.5 - 1.0
    z = dequantize_uniform(x, generator=g)
    assert torch.equal(((z + 1) / 2 * 256).floor(), k)  # (k + u)/256, u in [0, 1)
    logp_z = torch.full((2000,), -3 * math.log(2.0), dtype=torch.float64)
    bpd = -logp_z / (3 * math.log(2)) + NLL(dequantize="uniform").offset_bits
    assert torch.allclose(bpd, torch.full_like(bpd, 8.0))


@pytest.mark.slow
def test_cld_joint_likelihood_and_velocity_bound() -> None:
    from diffkit.sdes.cld import CLDSDE

    sde = CLDSDE()
    means = torch.tensor([[-1.0, 0.5], [1.0, -0.5]])
    dist = GaussianMixture(torch.tensor([0.6, 0.4]), means, torch.tensor([0.05, 0.1]))
    model = ExactScoreModel(dist, sde, target="score")
    g = torch.Generator().manual_seed(0)
    x = dist.sample(4, generator=g)
    var = sde.velocity_variance
    v = math.sqrt(var) * torch.randn(x.shape, generator=g, dtype=torch.float64)
    u = torch.stack([x, v], 1)
    p_t = lambda w: dist.marginal_log_prob(w, sde.T, sde)  # noqa: E731
    res = pf_ode_log_likelihood(model, sde, u, prior_logp=p_t, rtol=1e-6, atol=1e-6, eps=EPS)
    joint = dist.marginal_log_prob(u, EPS, sde)
    assert (res.logp - joint).abs().max().item() < 2e-5  # measured 1.3e-6 at tol 1e-7
    # log p(x, v) - log q(v) estimates log p(x); at eps = 1e-5 the gap p_eps vs p_0 is < 0.01
    log_q = -0.5 * (v.pow(2).sum(-1) / var + 2 * math.log(2 * math.pi * var))
    assert (res.logp - log_q - dist.log_prob(x)).abs().max().item() < 0.02
    metric = NLL(rtol=1e-5, atol=1e-5).bind(sde, model)
    metric.update(x)
    out = metric.compute()
    ref_bpd = (-dist.log_prob(x) / (2 * math.log(2))).mean().item()
    # one velocity draw per datum: the bound's estimate scatters around the exact bpd
    assert abs(out["value"].item() - ref_bpd) < 4 * out["bpd_sem"].item() + 0.05
