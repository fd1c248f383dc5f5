"""Gaussian residual parameterisation: a zero network is the exact score model of
N(0, sigma_data^2 I) data (against diffkit.sdes.exact), on scalar, blurring and CLD kernels."""

from __future__ import annotations

import functools

import pytest
import torch

from diffkit.data.gmm import GaussianMixtureDataModule
from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization, gaussian_prediction
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.gaussian.score import ExactScoreModel
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.losses.hsm import HybridScoreMatching
from diffkit.module import DiffusionModule
from diffkit.prediction import Prediction
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.exact import Gaussian
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE

SIGMA_DATA = 0.7


class Zero(Denoiser):
    """A network that outputs zeros of its output shape (float64)."""

    def __init__(self, spec: DenoiserSpec) -> None:
        super().__init__(spec)
        self.p = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, u, c_noise, cond=None):
        return torch.zeros(u.shape[0], *self.spec.output_shape, dtype=torch.float64) * self.p


def cases():
    return {
        "vp": (VPSDE(), (3,)),
        "ve": (VESDE(), (3,)),
        "blur": (BlurSDE(image_size=4), (1, 4, 4)),
        "cld": (CLDSDE(kernel="dsm"), (2,)),
    }


@pytest.mark.parametrize(
    ("name", "target"),
    [(n, tg) for n in ("vp", "ve", "blur", "cld") for tg in ("eps", "x0", "score")] + [("vp", "v")],
)
def test_zero_network_is_the_exact_gaussian_score_model(name: str, target: str) -> None:
    sde, data_shape = cases()[name]
    state_shape = sde.state_shape(data_shape)
    spec = DenoiserSpec(data_shape, state_shape, state_shape)
    model = Parameterization(sde, Zero(spec), target, residual="gaussian", sigma_data=SIGMA_DATA)
    exact = ExactScoreModel(
        Gaussian(torch.zeros(data_shape), SIGMA_DATA**2), sde, "eps" if target == "v" else target
    )
    gen = torch.Generator().manual_seed(0)
    b = 16
    t_lo = max(float(getattr(sde, "t_min", 0.0)), 1e-3)
    t = t_lo + (sde.T - t_lo) * torch.rand(b, generator=gen, dtype=torch.float64)
    t[0], t[1] = sde.T, t_lo
    u = 3.0 * torch.randn(b, *state_shape, generator=gen, dtype=torch.float64)
    p, q = model(u, t), exact(u, t)
    want = q.v() if target == "v" else q.raw  # v = alpha eps - sigma x0 of the exact model
    scale = want.abs().max()
    assert scale > 1e-3
    torch.testing.assert_close(p.raw, want, rtol=1e-10, atol=1e-10 * float(scale))
    torch.testing.assert_close(p.score(), q.score(), rtol=1e-9, atol=1e-9)


def test_scalar_vp_closed_form() -> None:
    sde = VPSDE()
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    u = torch.randn(3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    k = sde.kernel(t)
    alpha, sigma = k.mean_op.coef[:, 0, 0, None], k.scale.coef[:, 0, 0, None]
    eps = gaussian_prediction(sde, u, t, k, "eps", SIGMA_DATA)
    expected = sigma * u / (alpha**2 * SIGMA_DATA**2 + sigma**2)
    torch.testing.assert_close(eps, expected, rtol=1e-12, atol=1e-14)


def test_training_step_through_module_with_dsm_residual() -> None:
    tiny = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)
    args = {"sde": VPSDE(), "denoiser": tiny, "sampler": DDIM(5)}
    m = DiffusionModule(loss=DenoisingScoreMatching(residual="gaussian"), **args)
    base = DiffusionModule(loss=DenoisingScoreMatching(), **args)
    base.load_state_dict(m.state_dict())
    assert m.model.residual == "gaussian" and base.model.residual == "none"
    batch = {"x": GaussianMixtureDataModule().reference_samples(32)}
    loss = m.training_step(batch, 0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.net.parameters())
    # same weights: the two score models differ by exactly the Gaussian eps
    u = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    t = torch.linspace(0.05, 1.0, 8, dtype=torch.float64)
    with torch.no_grad():
        diff = m.model(u, t).eps().double() - base.model(u, t).eps().double()
    k = m.sde.kernel(t)
    gauss = gaussian_prediction(m.sde, u, t, k, "eps", 0.5)
    torch.testing.assert_close(diff, gauss, rtol=1e-5, atol=1e-5)


def test_v_target_trains_with_the_residual_and_the_zero_network_has_the_exact_loss() -> None:
    """With target 'v' and the residual, a zero network's DSM loss on Gaussian data equals the
    exact v-model's (the irreducible loss), and one training step runs."""
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    model = Parameterization(sde, Zero(spec), "v", residual="gaussian", sigma_data=SIGMA_DATA)
    gen = torch.Generator().manual_seed(3)
    x0 = SIGMA_DATA * torch.randn(512, 3, generator=gen, dtype=torch.float64)
    t = 1e-3 + 0.999 * torch.rand(512, generator=gen, dtype=torch.float64)
    loss = DenoisingScoreMatching(target="v", residual="gaussian", sigma_data=SIGMA_DATA)
    got = loss(model, sde, x0, generator=torch.Generator().manual_seed(4), t=t).loss
    exact = ExactScoreModel(Gaussian(torch.zeros(3), SIGMA_DATA**2), sde, "eps")

    def exact_v(u, tt):
        q = exact(u, tt)
        return Prediction(u, tt, q.v(), q.kernel, "v")

    want = loss(exact_v, sde, x0, generator=torch.Generator().manual_seed(4), t=t).loss
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    tiny = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)
    m = DiffusionModule(sde=VPSDE(), denoiser=tiny, sampler=DDIM(5), loss=loss)
    step = m.training_step({"x": GaussianMixtureDataModule().reference_samples(32)}, 0)
    step.backward()
    assert torch.isfinite(step) and m.model.residual == "gaussian" and m.model.target == "v"


@pytest.mark.parametrize("target", ["eps", "score"])
def test_velocity_only_zero_network_is_the_exact_gaussian_velocity_score(target: str) -> None:
    """CLD hybrid score matching with the residual: a zero velocity network gives the velocity
    half of the exact score of N(0, sigma_data^2 I) data (velocity N(0, gamma M)), and the HSM
    loss of that model equals the exact velocity-score model's loss."""
    sde = CLDSDE()  # training kernel 'hsm': conditioned on x0 only
    data_shape = (3,)
    spec = DenoiserSpec(data_shape, sde.state_shape(data_shape), data_shape)
    model = Parameterization(
        sde, Zero(spec), target, velocity_only=True, residual="gaussian", sigma_data=SIGMA_DATA
    )
    exact = ExactScoreModel(Gaussian(torch.zeros(data_shape), SIGMA_DATA**2), sde, "score")
    gen = torch.Generator().manual_seed(5)
    t = 1e-3 + 0.999 * torch.rand(64, generator=gen, dtype=torch.float64)
    u = 2.0 * torch.randn(64, 2, 3, generator=gen, dtype=torch.float64)
    p, q = model(u, t), exact(u, t)
    assert p.velocity_only
    want = q.score()[:, 1]
    torch.testing.assert_close(p.score()[:, 1], want, rtol=1e-10, atol=1e-10)
    assert bool((p.score()[:, 0] == 0).all())

    def exact_velocity(uu, tt):
        full = exact(uu, tt)
        s_v = full.score()[:, 1]
        raw = torch.stack([torch.zeros_like(s_v), s_v], 1)
        return Prediction(uu, tt, raw, full.kernel, "score", velocity_only=True)

    loss = HybridScoreMatching(target=target, residual="gaussian", sigma_data=SIGMA_DATA)
    x0 = SIGMA_DATA * torch.randn(256, 3, generator=gen, dtype=torch.float64)
    tt = 1e-3 + 0.999 * torch.rand(256, generator=gen, dtype=torch.float64)
    got = loss(model, sde, x0, generator=torch.Generator().manual_seed(6), t=tt).loss
    ref = loss(exact_velocity, sde, x0, generator=torch.Generator().manual_seed(6), t=tt).loss
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-10)
    tiny = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)
    m = DiffusionModule(sde=CLDSDE(), denoiser=tiny, sampler=DDIM(5), loss=loss)
    assert m.model.residual == "gaussian" and m.model.velocity_only
    step = m.training_step({"x": GaussianMixtureDataModule().reference_samples(32)}, 0)
    step.backward()
    assert torch.isfinite(step)


def test_refusals_name_field_and_fix() -> None:
    with pytest.raises(ValueError, match=r"dsm\.residual"):
        DenoisingScoreMatching(residual="laplace")
    with pytest.raises(ValueError, match="preconditioning"):
        DenoisingScoreMatching(target="x0", preconditioning="edm", residual="gaussian")
    spec = DenoiserSpec((2,), (2, 2), (2,))
    with pytest.raises(ValueError, match=r"mixed_score.*keep one"):
        Parameterization(
            CLDSDE(), Zero(spec), "eps", velocity_only=True, mixed_score=True, residual="gaussian"
        )
    with pytest.raises(ValueError, match=r"hsm\.mixed_score=false or hsm\.residual='none'"):
        HybridScoreMatching(mixed_score=True, residual="gaussian")
    with pytest.raises(ValueError, match=r"hsm\.residual"):
        HybridScoreMatching(residual="laplace")
    spec = DenoiserSpec((2,), (2,), (2,))
    with pytest.raises(ValueError, match=r"target 'v'.*supports_v=False"):
        Parameterization(VESDE(), Zero(spec), "v", residual="gaussian")
