"""Parameterization: conversions, input scaling, EDM preconditioning, dtype boundary."""

from __future__ import annotations

import pytest
import torch

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.sdes.vp import VPSDE


class Probe(Denoiser):
    """A linear test network that records its inputs: out = W u + c_noise."""

    def __init__(self, spec: DenoiserSpec, dtype=torch.float32) -> None:
        super().__init__(spec)
        d = spec.state_shape[-1]
        gen = torch.Generator().manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(d, d, generator=gen, dtype=dtype))
        self.seen: dict = {}

    def forward(self, u, c_noise, cond=None):
        self.seen = {"u": u, "c": c_noise}
        return u @ self.w.T + c_noise[:, None]


def test_round_trip_conversions_vp() -> None:
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(8, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    net = Probe(spec, torch.float64)
    preds = {tg: Parameterization(sde, net, tg)(u, t) for tg in ["eps", "x0", "v", "score"]}
    p = preds["eps"]
    from diffkit.prediction import Prediction

    for tg, fn in [("x0", p.x0), ("v", p.v), ("score", p.score)]:
        q = Prediction(u, t, fn(), p.kernel, tg)
        torch.testing.assert_close(q.eps(), p.raw, rtol=1e-12, atol=1e-12)


def test_input_scaling_and_noise_condition() -> None:
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    net = Probe(spec)
    u = torch.randn(5, 3, dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 5, dtype=torch.float64)
    # sigma_data = 1 under VP: alpha^2 + sigma^2 = 1, so c_in = 1
    Parameterization(sde, net, "eps", sigma_data=1.0)(u, t)
    torch.testing.assert_close(net.seen["u"], u.float())
    assert net.seen["u"].dtype == torch.float32 and net.seen["c"].dtype == torch.float32
    torch.testing.assert_close(net.seen["c"], sde.noise_condition(t).float())
    Parameterization(sde, net, "eps", sigma_data=0.5)(u, t)
    a, s = sde.alpha(t), sde.sigma(t)
    torch.testing.assert_close(net.seen["u"], (u / (0.25 * a**2 + s**2).sqrt()[:, None]).float())
    out = Parameterization(sde, net, "eps", input_scaling=False)(u, t)
    torch.testing.assert_close(net.seen["u"], u.float())
    assert out.raw.dtype == torch.float32


def test_edm_preconditioning_formulas() -> None:
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    net = Probe(spec, torch.float64)
    u = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.01, 0.2, 0.5, 1.0], dtype=torch.float64)
    pred = Parameterization(sde, net, "x0", preconditioning="edm", sigma_data=0.5)(u, t)
    a, s = sde.alpha(t)[:, None], sde.sigma(t)[:, None]
    rho = s / a
    xt = u / a
    f = (xt / (rho**2 + 0.25).sqrt()) @ net.w.T + (0.25 * rho.log())
    d = 0.25 / (rho**2 + 0.25) * xt + rho * 0.5 / (rho**2 + 0.25).sqrt() * f
    torch.testing.assert_close(pred.x0(), d, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="target='x0'"):
        Parameterization(sde, net, "eps", preconditioning="edm")


def test_refusals() -> None:
    sde = VPSDE()
    spec = DenoiserSpec((3,), (3,), (3,))
    with pytest.raises(ValueError, match="velocity_only"):
        Parameterization(sde, Probe(spec), "eps", velocity_only=True)
    with pytest.raises(ValueError, match="target"):
        Parameterization(sde, Probe(spec), "noise")  # type: ignore[arg-type]
    bad = ResNetMLP(DenoiserSpec((3,), (3,), (2,)), width=8, depth=1)
    with pytest.raises(ValueError, match="output_shape"):
        Parameterization(sde, bad, "eps")(torch.zeros(2, 3), torch.full((2,), 0.5))
