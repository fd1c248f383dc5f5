"""DSM and HSM on every built-in SDE: exact irreducible losses (Gaussian data, operator algebra),
one training step per (loss, SDE, target), and refusals of undefined combinations."""

from __future__ import annotations

import importlib

import pytest
import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.losses.hsm import HybridScoreMatching
from diffkit.registry.builtins import BUILTINS
from diffkit.sdes.exact import ExactScoreModel, Gaussian
from diffkit.sdes.operators import LinearOp

S2 = 0.5  # data variance
DATA_SHAPE = (1, 4, 4)  # small images: every SDE (incl. blurring) acts on them


#: Constructor arguments the SDEs need for DATA_SHAPE (the others use their defaults).
SDE_KWARGS = {"blur": {"image_size": DATA_SHAPE[-2:]}}


def load_sde(name: str):
    module, attr = BUILTINS["sde"][name].split(":")
    sde = getattr(importlib.import_module(module), attr)(**SDE_KWARGS.get(name, {}))
    sde.check_data_shape(DATA_SHAPE)
    return sde


SDE_NAMES = sorted(BUILTINS["sde"])


def init_velocity_variance(sde) -> float:
    """Variance of the lifted v_0 (CLD 'dsm' kernel draws it; 'hsm' marginalises it)."""
    if sde.block == 2 and getattr(sde, "kernel_mode", "hsm") == "dsm":
        return float(sde.velocity_variance)
    return 0.0


def posterior_ops(sde, t: float):
    """(V_eps, V_score, V_x0): conditional covariances given u_t for N(0, S2 I) data."""
    k = sde.kernel(torch.tensor([t], dtype=torch.float64))
    psi, kk = k.mean_op, k.scale
    if sde.block == 2:
        c0 = LinearOp.block(
            torch.tensor([[[S2, 0.0], [0.0, init_velocity_variance(sde)]]], dtype=torch.float64)
        )
    else:
        c0 = LinearOp.scalar(S2)
    p = psi @ c0 @ psi.T + k.cov
    eye = LinearOp.scalar(1.0, k=sde.block)
    v_eps = eye - kk.T @ p.inv() @ kk
    v_score = kk.T.inv() @ v_eps @ kk.inv()
    v_x0 = c0 - c0 @ psi.T @ p.inv() @ psi @ c0
    return v_eps, v_score, v_x0


def mean_diag(op: LinearOp, which: slice = slice(None)) -> float:
    d = torch.diagonal(op.coef, dim1=-2, dim2=-1)[..., which]
    return d.mean().item()


def exact_model(sde):
    dist = Gaussian(torch.zeros(DATA_SHAPE, dtype=torch.float64), S2)
    return ExactScoreModel(dist, sde, "score")


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("target", ["eps", "x0", "score"])
def test_dsm_irreducible_every_sde(name: str, target: str) -> None:
    sde = load_sde(name)
    model = exact_model(sde)
    t = 0.3
    gen = torch.Generator().manual_seed(7)
    n = 4000
    x0 = torch.randn(n, *DATA_SHAPE, generator=gen, dtype=torch.float64) * S2**0.5
    loss = DenoisingScoreMatching(target=target)
    out = loss(model, sde, x0, generator=gen, t=torch.full((n,), t, dtype=torch.float64))
    v_eps, v_score, v_x0 = posterior_ops(sde, t)
    expected = {"eps": mean_diag(v_eps), "score": mean_diag(v_score), "x0": mean_diag(v_x0)}
    mean, se = out.loss.mean().item(), out.loss.std().item() / n**0.5
    assert abs(mean - expected[target]) < 4 * se + 1e-12, (mean, expected[target], se)


@pytest.mark.parametrize("target", ["eps", "score"])
def test_hsm_irreducible_cld(target: str) -> None:
    sde = load_sde("cld")
    model = exact_model(sde)
    gen = torch.Generator().manual_seed(8)
    n = 4000
    for t in [0.05, 0.5]:
        x0 = torch.randn(n, *DATA_SHAPE, generator=gen, dtype=torch.float64) * S2**0.5
        tt = torch.full((n,), t, dtype=torch.float64)
        out = HybridScoreMatching(target=target)(model, sde, x0, generator=gen, t=tt)
        v_eps, v_score, _ = posterior_ops(sde, t)
        expected = mean_diag(v_eps if target == "eps" else v_score, slice(1, 2))
        mean, se = out.loss.mean().item(), out.loss.std().item() / n**0.5
        assert abs(mean - expected) < 4 * se, (t, mean, expected, se)
        # likelihood weighting: 2 Gamma beta ||s_hat_v - s_v||^2
        lik = HybridScoreMatching(target=target, weighting="likelihood")
        out = lik(model, sde, x0, generator=gen, t=tt)
        g2 = (sde.diffusion_op(tt[:1]).coef[0, 1, 1] ** 2).item()
        exp_l = g2 * mean_diag(v_score, slice(1, 2))
        assert abs(out.loss.mean().item() - exp_l) < 4 * out.loss.std().item() / n**0.5


def _train_step(sde, loss, target: str, velocity_only: bool) -> None:
    torch.manual_seed(0)
    state = sde.state_shape(DATA_SHAPE)
    out_shape = DATA_SHAPE if velocity_only else state
    net = ResNetMLP(DenoiserSpec(DATA_SHAPE, state, out_shape), width=16, depth=1, emb_dim=8)
    torch.nn.init.normal_(net.out.weight, std=1e-2)
    model = Parameterization(sde, net, target, velocity_only=velocity_only)
    loss.check_sde(sde)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(8, *DATA_SHAPE, generator=gen)
    before = [p.detach().clone() for p in net.parameters()]
    out = loss(model, sde, x0, generator=gen)
    assert out.loss.shape == (8,) and out.t.shape == (8,)
    assert torch.isfinite(out.loss).all()
    out.loss.mean().backward()
    opt.step()
    after = list(net.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("target", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("weighting", ["uniform", "sigma2", "likelihood", "edm", "min_snr"])
def test_dsm_training_step_or_refusal(name: str, target: str, weighting: str) -> None:
    sde = load_sde(name)
    loss = DenoisingScoreMatching(target=target, weighting=weighting)
    if target == "v" and not sde.supports_v:
        with pytest.raises(ValueError, match=r"target='v'.*use target 'eps' or 'x0'"):
            loss.check_sde(sde)
        with pytest.raises(ValueError, match="'v' is defined only"):
            Parameterization(sde, ResNetMLP(DenoiserSpec((2,), (2,), (2,))), "v")
        return
    _train_step(sde, loss, target, velocity_only=False)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("target", ["eps", "score"])
def test_hsm_training_step_or_refusal(name: str, target: str) -> None:
    sde = load_sde(name)
    loss = HybridScoreMatching(target=target)
    if sde.block != 2:
        with pytest.raises(ValueError, match="only for CLD-type SDEs"):
            loss.check_sde(sde)
        return
    _train_step(sde, loss, target, velocity_only=True)


def test_importance_refused_on_operator_kernels() -> None:
    for name in SDE_NAMES:
        sde = load_sde(name)
        k = sde.kernel(torch.tensor([0.5], dtype=torch.float64))
        loss = DenoisingScoreMatching(weighting="likelihood", time_sampling="importance")
        if k.mean_op.is_scalar and k.scale.is_scalar:
            loss.check_sde(sde)
        else:
            with pytest.raises(ValueError, match="scalar kernel"):
                loss.check_sde(sde)


class ShiftedScore:
    """The exact score plus ``shift`` on the velocity half (CLD) or the whole state."""

    def __init__(self, base, shift, velocity: bool) -> None:
        self.base, self.shift, self.velocity = base, shift, velocity

    def __call__(self, u_t, t):
        p = self.base(u_t, t)
        raw = p.raw.clone()
        if self.velocity:
            raw[:, 1] = raw[:, 1] + self.shift
        else:
            raw = raw + self.shift
        return type(p)(u_t, p.t, raw, p.kernel, p.target)


@pytest.mark.parametrize(("name", "loss_name"), [(n, "dsm") for n in SDE_NAMES] + [("cld", "hsm")])
def test_gradient_vanishes_at_the_exact_score(name: str, loss_name: str) -> None:
    """d/d(shift) of the expected loss is 0 at the exact score (within Monte Carlo error)."""
    sde = load_sde(name)
    base = exact_model(sde)
    velocity = loss_name == "hsm"
    loss = HybridScoreMatching() if velocity else DenoisingScoreMatching(weighting="sigma2")
    gen = torch.Generator().manual_seed(9)
    n = 4000
    x0 = torch.randn(n, *DATA_SHAPE, generator=gen, dtype=torch.float64) * S2**0.5
    tt = torch.full((n,), 0.3, dtype=torch.float64)
    shift = torch.zeros((), dtype=torch.float64, requires_grad=True)
    out = loss(ShiftedScore(base, shift, velocity), sde, x0, generator=gen, t=tt)
    (grad,) = torch.autograd.grad(out.loss.mean(), shift)
    # per-sample gradients give the Monte Carlo standard error of the mean gradient
    dims = len(DATA_SHAPE) + (0 if velocity else sde.block - 1)
    shift_b = torch.zeros(n, *([1] * dims), dtype=torch.float64)
    shift_b.requires_grad_(True)
    out_b = loss(ShiftedScore(base, shift_b, velocity), sde, x0, generator=gen, t=tt)
    (g_b,) = torch.autograd.grad(out_b.loss.sum(), shift_b)
    se = g_b.flatten().std().item() / n**0.5
    assert abs(grad.item()) < 4 * se


def test_velocity_only_parameterization_round_trip() -> None:
    """HSM wrapper: net output F (eps_v) -> s_v = -l_t F -> eps_hat_v = F exactly."""
    sde = load_sde("cld")
    spec = DenoiserSpec((3,), (2, 3), (3,))
    net = ResNetMLP(spec, width=8, depth=1).double()
    torch.nn.init.normal_(net.out.weight)
    model = Parameterization(sde, net, "eps", velocity_only=True)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(6, 2, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(6, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    pred = model(u, t)
    f = net(model_input(model, u, t), sde.noise_condition(t))
    torch.testing.assert_close(pred.score()[:, 1], -sde.ell(t)[:, None] * f, rtol=1e-10, atol=0)
    assert torch.equal(pred.score()[:, 0], torch.zeros_like(f)) and pred.velocity_only
    with pytest.raises(ValueError, match="velocity score"):
        pred.x0()


def model_input(model: Parameterization, u, t):
    from diffkit.denoisers.parameterization import marginal_input_scale

    return marginal_input_scale(model.sde.kernel(t), model.sigma_data).apply(u)


def test_mixed_score_adds_the_reference_velocity_score() -> None:
    sde = load_sde("cld")
    spec = DenoiserSpec((3,), (2, 3), (3,))
    net = ResNetMLP(spec, width=8, depth=1).double()
    torch.nn.init.normal_(net.out.weight)
    plain = Parameterization(sde, net, "eps", velocity_only=True)
    mixed = Parameterization(sde, net, "eps", velocity_only=True, mixed_score=True)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(6, 2, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(6, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    var_v = sde.kernel(t).cov.coef[:, 1, 1]
    ref = plain(u, t).score()[:, 1] - u[:, 1] / var_v[:, None]
    torch.testing.assert_close(mixed(u, t).score()[:, 1], ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="velocity_only=True"):
        Parameterization(sde, net, "eps", mixed_score=True)
    assert HybridScoreMatching(mixed_score=True).mixed_score
