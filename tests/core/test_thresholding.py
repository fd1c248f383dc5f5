"""x0 thresholding (static clip, Imagen's dynamic thresholding) as a score-model wrapper: every
sampler sees x0 in range, in-range predictions are unchanged, and eps / score are re-derived
from the clipped x0 through the kernel (closed forms for VP and blurring)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from diffkit.denoisers.resnet import ResNetMLP
from diffkit.module import DiffusionModule
from diffkit.prediction import Prediction
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.heun import Heun
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.vp import VPSDE
from diffkit.thresholding import ThresholdedModel, threshold_x0


class X0Model:
    """A score model predicting ``x0 = scale * tanh(u_t)`` (out of [-1, 1] for scale > 1)."""

    def __init__(self, sde, scale: float) -> None:
        self.sde, self.scale = sde, scale

    def __call__(self, u, t) -> Prediction:
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(u.shape[0])
        return Prediction(u, t, self.scale * torch.tanh(u), self.sde.kernel(t), "x0")


class Spy:
    """Records the x0 of every prediction the sampler receives."""

    def __init__(self, model) -> None:
        self.model, self.x0s = model, []

    def __call__(self, u, t) -> Prediction:
        pred = self.model(u, t)
        self.x0s.append(pred.x0())
        return pred


@pytest.mark.parametrize(
    "sampler",
    [DDIM(8, denoise_final=True), DDIM(8, eta=1.0), DEIS(6), Heun(5), EulerMaruyama(10)],
    ids=["ddim", "ddpm", "deis", "heun", "em"],
)
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_every_sampler_sees_x0_in_range(sampler, kind) -> None:
    sde = VPSDE()
    spy = Spy(ThresholdedModel(X0Model(sde, 3.0), kind))
    res = sampler.sample(spy, sde, (16, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    assert len(spy.x0s) == res.nfe > 0
    for x0 in spy.x0s:
        assert float(x0.abs().max()) <= 1.0 + 1e-6
    # Without thresholding the same model's x0 leaves the range.
    raw = Spy(X0Model(sde, 3.0))
    sampler.sample(raw, sde, (16, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    assert max(float(x0.abs().max()) for x0 in raw.x0s) > 2.0
    if sampler.denoise_final:  # the final Tweedie step returns the thresholded x0
        assert float(res.x.abs().max()) <= 1.0 + 1e-6


@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_identity_within_range(kind) -> None:
    sde = VPSDE()
    u = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.full((8,), 0.4, dtype=torch.float64)
    inner = X0Model(sde, 0.9)
    pred, out = inner(u, t), ThresholdedModel(inner, kind)(u, t)
    assert torch.equal(out.x0(), pred.x0())
    torch.testing.assert_close(out.eps(), pred.eps(), rtol=0, atol=1e-12)


def test_eps_and_score_follow_the_clipped_x0_vp() -> None:
    sde = VPSDE()
    g = torch.Generator().manual_seed(2)
    u = 3 * torch.randn(6, 2, 4, 4, generator=g, dtype=torch.float64)
    t = torch.rand(6, generator=g, dtype=torch.float64) * 0.9 + 0.05
    out = ThresholdedModel(X0Model(sde, 2.5), "static")(u, t)
    x0c = (2.5 * torch.tanh(u)).clamp(-1, 1)
    k = sde.kernel(t)
    alpha = k.mean_op.coef[:, 0, 0].reshape(-1, 1, 1, 1)
    sigma = k.scale.coef[:, 0, 0].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out.x0(), x0c, rtol=0, atol=0)
    torch.testing.assert_close(out.eps(), (u - alpha * x0c) / sigma, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.score(), -(u - alpha * x0c) / sigma**2, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(out.v(), alpha * out.eps() - sigma * x0c, rtol=1e-12, atol=1e-12)


def test_eps_follows_the_clipped_x0_blurring() -> None:
    """Operator kernel: eps = K^{-1} (u - A x0) with dense matrices."""
    sde = BlurSDE(image_size=4)
    shape = (1, 4, 4)
    g = torch.Generator().manual_seed(3)
    u = 2 * torch.randn(3, *shape, generator=g, dtype=torch.float64)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    out = ThresholdedModel(X0Model(sde, 2.0), "static")(u, t)
    x0c = (2.0 * torch.tanh(u)).clamp(-1, 1)
    k = sde.kernel(t[:1])
    a, kk = k.mean_op.dense(shape)[0], k.scale.dense(shape)[0]
    want = torch.linalg.solve(kk, (u.reshape(3, -1) - x0c.reshape(3, -1) @ a.T).T).T
    torch.testing.assert_close(out.eps().reshape(3, -1), want, rtol=1e-9, atol=1e-9)


def test_dynamic_thresholding_closed_form() -> None:
    g = torch.Generator().manual_seed(4)
    x0 = 3 * torch.randn(5, 1, 6, 6, generator=g, dtype=torch.float64)
    x0[0] = 0.5 * torch.tanh(x0[0])  # in range: s = 1, unchanged
    p = 0.9
    out = threshold_x0(x0, "dynamic", percentile=p)
    for b in range(5):
        s = max(float(np.quantile(x0[b].abs().numpy().ravel(), p)), 1.0)
        want = np.clip(x0[b].numpy(), -s, s) / s
        np.testing.assert_allclose(out[b].numpy(), want, rtol=1e-6, atol=1e-7)
    assert torch.equal(out[0], x0[0])
    # max_scale 1 is static clipping; a data range maps through its centre and half width.
    assert torch.equal(threshold_x0(x0, "dynamic", max_scale=1.0), x0.clamp(-1, 1))
    torch.testing.assert_close(
        threshold_x0(x0, "static", data_range=(0.0, 4.0)), x0.clamp(0.0, 4.0), rtol=0, atol=1e-15
    )


TINY = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)


def test_module_default_follows_the_data_range() -> None:
    vp = VPSDE()
    assert DiffusionModule(vp, TINY, data_shape=(2,)).thresholding == "none"
    img = DiffusionModule(vp, TINY, data_shape=(2,), data_range=(-1.0, 1.0))
    assert img.thresholding == "static"
    assert isinstance(img.score_model(img.model), ThresholdedModel)
    assert not isinstance(
        DiffusionModule(vp, TINY, data_shape=(2,)).score_model(img.model), ThresholdedModel
    )
    # CLD's (x, v) states: auto is off, an explicit request is refused with the fix.
    assert DiffusionModule(CLDSDE(), TINY, data_range=(-1.0, 1.0)).thresholding == "none"
    with pytest.raises(ValueError, match="thresholding: none"):
        DiffusionModule(CLDSDE(), TINY, data_range=(-1.0, 1.0), thresholding="static")
    with pytest.raises(ValueError, match=r"needs model\.data_range"):
        DiffusionModule(vp, TINY, thresholding="dynamic")
    with pytest.raises(ValueError, match="low < high"):
        DiffusionModule(vp, TINY, data_range=(1.0, -1.0))
