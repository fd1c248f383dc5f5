"""The v and EDM recipes on image-shaped data ``(B, C, H, W)``: per-sample times broadcast
over the image axes, the losses equal their closed forms, and a batch equals its samples
computed one at a time."""

from __future__ import annotations

import pytest
import torch

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.sdes.vp import VPSDE

SHAPE = (2, 4, 4)


class Conv(Denoiser):
    """A float64 conv layer plus the noise input; remembers its input and output."""

    def __init__(self, spec: DenoiserSpec) -> None:
        super().__init__(spec)
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(2, 2, 3, padding=1).double()
        self.inp = self.last = None

    def forward(self, u, c_noise, cond=None):
        self.inp = u
        self.last = self.conv(u) + c_noise[:, None, None, None]
        return self.last


def batch(n: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(n, *SHAPE, generator=g, dtype=torch.float64).clamp(-1, 1)
    t = torch.linspace(0.02, 0.98, n, dtype=torch.float64)
    return x0, t, g


def coefs(sde, t):
    k = sde.kernel(t)
    a = k.mean_op.coef[:, 0, 0].reshape(-1, 1, 1, 1)
    s = k.scale.coef[:, 0, 0].reshape(-1, 1, 1, 1)
    return a, s


def test_v_target_on_images_is_the_closed_form() -> None:
    sde = VPSDE()
    net = Conv(DenoiserSpec(SHAPE, SHAPE, SHAPE))
    model = Parameterization(sde, net, "v", sigma_data=0.5)
    x0, t, g = batch()
    u_t, eps = sde.perturb(x0, t, generator=g)
    pred = model(u_t, t)
    a, s = coefs(sde, t)
    torch.testing.assert_close(net.inp, u_t / (0.25 * a**2 + s**2).sqrt(), rtol=1e-12, atol=0)
    per = DenoisingScoreMatching(target="v").per_sample(sde, pred, x0, eps)
    want = (net.last - (a * eps - s * x0)).square().mean((1, 2, 3))
    torch.testing.assert_close(per, want, rtol=1e-12, atol=1e-12)
    # the conversions the samplers use: x0 = a u - s v, eps = s u + a v
    torch.testing.assert_close(pred.x0(), a * u_t - s * net.last, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pred.eps(), s * u_t + a * net.last, rtol=1e-12, atol=1e-12)


def test_edm_recipe_on_images_is_unweighted_mse_on_raw_output() -> None:
    sde = VPSDE()
    net = Conv(DenoiserSpec(SHAPE, SHAPE, SHAPE))
    model = Parameterization(sde, net, "x0", preconditioning="edm", sigma_data=0.5)
    loss = DenoisingScoreMatching(
        target="x0", weighting="edm", time_sampling="log_normal", preconditioning="edm"
    )
    x0, _, g = batch(64, seed=1)
    t = loss.sample_time(sde, 64, g, "cpu")
    u_t, eps = sde.perturb(x0, t, generator=g)
    pred = model(u_t, t)
    a, s = coefs(sde, t)
    rho = s / a
    norm = (rho**2 + 0.25).sqrt()
    torch.testing.assert_close(net.inp, u_t / (a * norm), rtol=1e-12, atol=0)
    c_skip, c_out = 0.25 / norm**2, rho * 0.5 / norm
    f_target = (x0 - c_skip * u_t / a) / c_out
    per = loss.per_sample(sde, pred, x0, eps)
    torch.testing.assert_close(
        per, (net.last - f_target).square().mean((1, 2, 3)), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize(
    "recipe",
    [
        {"target": "eps"},
        {"target": "v"},
        {"target": "x0", "weighting": "min_snr"},
        {"target": "x0", "weighting": "edm", "preconditioning": "edm"},
    ],
    ids=["eps", "v", "x0-minsnr", "edm"],
)
def test_batch_equals_samples_one_at_a_time(recipe) -> None:
    """Per-sample times and weights broadcast over (C, H, W), not across the batch."""
    sde = VPSDE()
    net = Conv(DenoiserSpec(SHAPE, SHAPE, SHAPE))
    model = Parameterization(
        sde, net, recipe["target"], preconditioning=recipe.get("preconditioning", "none")
    )
    loss = DenoisingScoreMatching(**recipe)
    x0, t, g = batch()
    u_t, eps = sde.perturb(x0, t, generator=g)
    whole = loss.per_sample(sde, model(u_t, t), x0, eps)
    parts = torch.cat(
        [
            loss.per_sample(sde, model(u_t[i : i + 1], t[i : i + 1]), x0[i : i + 1], eps[i : i + 1])
            for i in range(len(t))
        ]
    )
    torch.testing.assert_close(whole, parts, rtol=1e-10, atol=1e-12)
