"""DSM against closed forms: irreducible losses, stationarity, weight equivalences, training."""

from __future__ import annotations

import pytest
import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.losses.time_sampling import likelihood_normaliser
from diffkit.prediction import Prediction
from diffkit.sdes.vp import VPSDE

S2 = 0.36  # data variance: x0 ~ N(0, S2 I)


class GaussianScore:
    """Exact score of N(0, S2 I) data under a scalar SDE, as a score model (target 'score')."""

    def __init__(self, sde, shift: float = 0.0) -> None:
        self.sde, self.shift = sde, shift

    def __call__(self, u, t, cond=None):
        k = self.sde.kernel(t)
        a, s = k.mean_op.coef[:, 0, 0], k.scale.coef[:, 0, 0]
        var = (a**2 * S2 + s**2).reshape(-1, *([1] * (u.dim() - 1)))
        return Prediction(u, t, -u / var + self.shift, k, "score")


def irreducible(target: str, sde, t: float) -> float:
    """Per-dimension E Var(target | u_t) for Gaussian data (closed form)."""
    k = sde.kernel(torch.tensor([t], dtype=torch.float64))
    a, s = float(k.mean_op.coef[0, 0, 0]), float(k.scale.coef[0, 0, 0])
    var_eps = a**2 * S2 / (a**2 * S2 + s**2)
    return {
        "eps": var_eps,
        "score": var_eps / s**2,
        "x0": var_eps * s**2 / a**2,
        "v": var_eps / a**2,
    }[target]


@pytest.mark.parametrize("target", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("t", [0.05, 0.5])
def test_irreducible_loss_and_stationarity(target: str, t: float) -> None:
    sde = VPSDE()
    gen = torch.Generator().manual_seed(1)
    n, d = 16000, 2
    x0 = torch.randn(n, d, generator=gen, dtype=torch.float64) * S2**0.5
    loss = DenoisingScoreMatching(target=target)
    tt = torch.full((n,), t, dtype=torch.float64)
    out = loss(GaussianScore(sde), sde, x0, generator=gen, t=tt)
    assert out.loss.shape == (n,)
    mean, se = out.loss.mean().item(), out.loss.std().item() / n**0.5
    assert abs(mean - irreducible(target, sde, t)) < 4 * se
    # gradient of the expected loss w.r.t. a constant shift of the score vanishes at the optimum
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    out = loss(GaussianScore(sde, shift), sde, x0, generator=gen, t=tt)
    (grad,) = torch.autograd.grad(out.loss.mean(), shift)
    # a shift of 1 raises the loss by c = |d target / d score|^2 per dim;
    # the gradient's standard error is about 2 sqrt(c L / n)
    out1 = loss(GaussianScore(sde, 1.0), sde, x0, generator=gen, t=tt)
    c = out1.loss.mean().item() - irreducible(target, sde, t)
    assert abs(grad.item()) < 5 * 2 * (c * irreducible(target, sde, t) / n) ** 0.5


def test_weightings_are_target_independent() -> None:
    """Non-uniform weightings define one objective whatever the target
    (docs/background/losses.md#targets table)."""
    sde = VPSDE()
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(64, 4, generator=gen, dtype=torch.float64)
    t = 1e-3 + torch.rand(64, generator=gen, dtype=torch.float64) * 0.99
    u_t, eps = sde.perturb(x0, t, generator=gen)
    k = sde.kernel(t)
    raw = torch.randn(64, 4, generator=gen, dtype=torch.float64)
    pred = Prediction(u_t, t, raw, k, "eps")
    for w in ["sigma2", "likelihood", "edm", "min_snr"]:
        vals = [
            DenoisingScoreMatching(target=tg, weighting=w).per_sample(sde, pred, x0, eps)
            for tg in ["eps", "x0", "v", "score"]
        ]
        for v in vals[1:]:
            torch.testing.assert_close(v, vals[0], rtol=1e-9, atol=0)
    # uniform weightings: ε-MSE = λσ^-2..., i.e. uniform-x0 = SNR^-1 uniform-eps, v = eps / α²
    a, s = k.mean_op.coef[:, 0, 0], k.scale.coef[:, 0, 0]
    lu = {
        tg: DenoisingScoreMatching(target=tg).per_sample(sde, pred, x0, eps)
        for tg in ["eps", "x0", "v", "score"]
    }
    torch.testing.assert_close(lu["x0"] * (a / s) ** 2, lu["eps"], rtol=1e-9, atol=0)
    torch.testing.assert_close(lu["v"] * a**2, lu["eps"], rtol=1e-9, atol=0)
    torch.testing.assert_close(lu["score"] * s**2, lu["eps"], rtol=1e-9, atol=0)
    # the sigma2 weighting equals the eps L_simple; min_snr for x0 is min(SNR, 5) x0-MSE
    sig2 = DenoisingScoreMatching(weighting="sigma2").per_sample(sde, pred, x0, eps)
    torch.testing.assert_close(sig2, lu["eps"], rtol=1e-12, atol=0)
    ms = DenoisingScoreMatching(target="x0", weighting="min_snr").per_sample(sde, pred, x0, eps)
    torch.testing.assert_close(ms, torch.clamp((a / s) ** 2, max=5.0) * lu["x0"], rtol=1e-9, atol=0)
    # likelihood: g^2 ||s_hat - s||^2 with g^2 = beta(t)
    lik = DenoisingScoreMatching(target="score", weighting="likelihood").per_sample(
        sde, pred, x0, eps
    )
    torch.testing.assert_close(lik, sde.beta(t) * lu["score"], rtol=1e-9, atol=0)
    # edm x0-weight (rho^2 + sd^2) / (rho sd)^2
    rho2 = (s / a) ** 2
    edm = DenoisingScoreMatching(target="x0", weighting="edm").per_sample(sde, pred, x0, eps)
    torch.testing.assert_close(edm, (rho2 + 0.25) / (rho2 * 0.25) * lu["x0"], rtol=1e-9, atol=0)


def test_importance_sampling_matches_uniform_expectation() -> None:
    """Likelihood weighting: importance-sampled t has the same expectation as uniform t."""
    sde = VPSDE()
    gen = torch.Generator().manual_seed(3)
    n = 60000
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64) * S2**0.5
    model = GaussianScore(sde)
    vals = {}
    for ts in ["uniform", "importance"]:
        out = DenoisingScoreMatching(weighting="likelihood", time_sampling=ts)(
            model, sde, x0, generator=gen
        )
        vals[ts] = (out.loss.mean().item(), out.loss.std().item() / n**0.5)
    # closed form: (1/(T - t_min)) int g^2/sigma^2 Var(eps|u) dt by quadrature
    t = torch.linspace(1e-5, 1.0, 200001, dtype=torch.float64)
    k = sde.kernel(t)
    a, s = k.mean_op.coef[:, 0, 0], k.scale.coef[:, 0, 0]
    f = sde.beta(t) / s**2 * a**2 * S2 / (a**2 * S2 + s**2)
    exact = torch.trapezoid(f, t).item() / (1.0 - 1e-5)
    (mu, se_u), (mi, se_i) = vals["uniform"], vals["importance"]
    assert abs(mi - exact) < 4 * se_i
    assert abs(mu - exact) < 4 * se_u
    assert se_i < se_u  # the point of importance sampling
    assert likelihood_normaliser(sde, 1e-5) > 0


def test_time_sampling_laws() -> None:
    sde = VPSDE()
    gen = torch.Generator().manual_seed(4)
    loss = DenoisingScoreMatching(time_sampling="stratified", t_min=1e-3)
    t = loss.sample_time(sde, 1000, gen, "cpu")
    assert t.dtype == torch.float64 and t.min() >= 1e-3 and t.max() <= 1.0
    # stratified: exactly one time per 1/B cell
    cells = ((t - 1e-3) / (1 - 1e-3) * 1000).floor().long()
    assert torch.equal(cells.sort().values, torch.arange(1000))
    ln = DenoisingScoreMatching(time_sampling="log_normal")
    t = ln.sample_time(sde, 20000, gen, "cpu")
    logrho = sde.noise_level(t).log()
    inside = (t > 1e-5) & (t < 1.0)
    assert abs(logrho[inside].mean().item() + 1.2) < 0.1  # truncation shifts it slightly
    # importance CDF: P(t <= t_q) = (lambda(t_min) - lambda(t_q)) / (lambda(t_min) - lambda(T))
    imp = DenoisingScoreMatching(weighting="likelihood", time_sampling="importance")
    t = imp.sample_time(sde, 20000, gen, "cpu")
    lam = sde.log_snr(torch.tensor([1e-5, 0.3, 1.0], dtype=torch.float64))
    cdf = ((lam[0] - lam[1]) / (lam[0] - lam[2])).item()
    assert abs((t <= 0.3).double().mean().item() - cdf) < 0.015


def test_construction_refusals() -> None:
    with pytest.raises(ValueError, match="weighting='likelihood'"):
        DenoisingScoreMatching(time_sampling="importance")
    with pytest.raises(ValueError, match=r"dsm\.target"):
        DenoisingScoreMatching(target="noise")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"dsm\.weighting"):
        DenoisingScoreMatching(weighting="snr")  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["eps", "x0", "v", "score"])
def test_training_step_vp(target: str) -> None:
    torch.manual_seed(0)
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    net = ResNetMLP(spec, width=32, depth=2)
    model = Parameterization(sde, net, target)
    loss = DenoisingScoreMatching(target=target)
    loss.check_sde(sde)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(32, 3, generator=gen)
    before = [p.detach().clone() for p in net.parameters()]
    out = loss(model, sde, x0, generator=gen)
    assert out.loss.shape == (32,) and torch.isfinite(out.loss).all()
    out.loss.mean().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_edm_recipe_is_unweighted_mse_on_raw_output() -> None:
    """EDM: lambda(sigma) c_out^2 = 1, so the loss is ||F - (x0 - c_skip x~) / c_out||^2."""
    from diffkit.denoisers.base import Denoiser

    class Linear(Denoiser):
        def __init__(self, spec):
            super().__init__(spec)
            self.lin = torch.nn.Linear(3, 3).double()
            self.last = None

        def forward(self, u, c_noise, cond=None):
            self.last = self.lin(u) + c_noise[:, None]
            return self.last

    sde = VPSDE()
    net = Linear(DenoiserSpec((3,), (3,), (3,)))
    model = Parameterization(sde, net, "x0", preconditioning="edm", sigma_data=0.5)
    loss = DenoisingScoreMatching(
        target="x0", weighting="edm", time_sampling="log_normal", preconditioning="edm"
    )
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(256, 3, generator=gen, dtype=torch.float64)
    t = loss.sample_time(sde, 256, gen, "cpu")
    u_t, eps = sde.perturb(x0, t, generator=gen)
    pred = model(u_t, t)
    per = loss.per_sample(sde, pred, x0, eps)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    rho = s / a
    c_skip = 0.25 / (rho**2 + 0.25)
    c_out = rho * 0.5 / (rho**2 + 0.25).sqrt()
    f_target = (x0 - c_skip * u_t / a) / c_out
    torch.testing.assert_close(per, (net.last - f_target).square().mean(-1), rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="target='x0'"):
        DenoisingScoreMatching(preconditioning="edm")
