"""Every built-in sampler, denoiser and loss through the public contract harnesses
(:mod:`diffkit.testing.contracts`), parametrized over the registry; plus negative controls that
show each harness fails on a broken part."""

from __future__ import annotations

import pytest
import torch

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.losses.base import Loss
from diffkit.prediction import Prediction
from diffkit.registry import DENOISERS, LOSSES, SAMPLERS
from diffkit.registry.builtins import BUILTINS
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.vp import VPSDE
from diffkit.testing.contracts import (
    check_denoiser,
    check_loss,
    check_sampler_convergence,
    check_sampler_determinism,
    check_sampler_nfe,
)

#: Convergence order of each built-in sampler's default configuration on Gaussian data
#: (weak order on the output variance for stochastic ones; DEIS's default extrapolation
#: degree 2 gives order 3; UniPC-2 with its corrector is order 3 on these steps, although its
#: last step, first order and uncorrected under lower_order_final, makes it 2 asymptotically).
SAMPLER_ORDERS = {
    "euler_maruyama": 1,
    "ddim": 1,
    "ei": 1,
    "heun": 2,
    "deis": 3,
    "gddim": 1,
    "pc": 1,
    "dpm_solver": 2,
    "unipc": 3,
}
VECTOR = DenoiserSpec((3,), (3,), (3,), num_classes=2)
IMAGE = DenoiserSpec((1, 8, 8), (1, 8, 8), (1, 8, 8), num_classes=2)
#: Small settings and shapes for each built-in denoiser.
DENOISERS_SMALL = {
    "resnet": (VECTOR, {"width": 16, "depth": 2, "emb_dim": 8}),
    "unet": (IMAGE, {"channels": 8, "channel_mult": (1, 2), "attn_resolutions": (4,)}),
    "unet_small": (IMAGE, {"channels": 8}),
    "unet_cifar10": (IMAGE, {}),
    "tensor_train": (VECTOR, {"rank": 2, "num_basis": 4}),
}
LOSS_SDES = {"dsm": VPSDE, "hsm": CLDSDE}


@pytest.mark.parametrize(
    ("kind", "table"),
    [("sampler", SAMPLER_ORDERS), ("denoiser", DENOISERS_SMALL), ("loss", LOSS_SDES)],
)
def test_every_builtin_has_contract_settings(kind: str, table: dict) -> None:
    assert set(BUILTINS[kind]) == set(table)


@pytest.mark.parametrize("name", sorted(SAMPLER_ORDERS))
def test_sampler_contract(name: str) -> None:
    cls = SAMPLERS.get(name)
    check_sampler_convergence(lambda n: cls(steps=n), SAMPLER_ORDERS[name])
    check_sampler_nfe(cls(steps=5))
    check_sampler_determinism(cls(steps=5))


@pytest.mark.parametrize("name", sorted(DENOISERS_SMALL))
def test_denoiser_contract(name: str) -> None:
    spec, kwargs = DENOISERS_SMALL[name]
    factory = DENOISERS.get(name)
    check_denoiser(lambda s: factory(s, **kwargs), spec)


def test_denoiser_contract_on_a_velocity_output() -> None:
    """CLD hybrid score matching: state (2, *S), output the velocity half (*S)."""
    check_denoiser(lambda s: DENOISERS.get("resnet")(s, width=16), DenoiserSpec((3,), (2, 3), (3,)))


@pytest.mark.parametrize("name", sorted(LOSS_SDES))
def test_loss_contract(name: str) -> None:
    out = check_loss(LOSSES.get(name)(), LOSS_SDES[name]())
    assert out["exact"] < out["scaled"]


# ----------------------------------------------------------------------------- negative controls
class _BiasedDDIM(DDIM):
    """DDIM whose output is 5% too large: an error that does not shrink with the steps."""

    def sample(self, model, sde, shape, **kw):
        res = super().sample(model, sde, shape, **kw)
        res.u = res.u * 1.05
        return res


class _GlobalRNGDDIM(DDIM):
    def sample(self, model, sde, shape, **kw):
        torch.randn(1)
        return super().sample(model, sde, shape, **kw)


def test_sampler_harness_fails_on_broken_samplers() -> None:
    with pytest.raises(AssertionError, match=r"slope|does not fall"):
        check_sampler_convergence(lambda n: _BiasedDDIM(steps=n), 1)
    with pytest.raises(AssertionError, match="global RNG"):
        check_sampler_determinism(_GlobalRNGDDIM(steps=3))


class _IgnoresNoiseLevel(Denoiser):
    def __init__(self, spec: DenoiserSpec, /) -> None:
        super().__init__(spec)
        self.lin = torch.nn.Linear(3, 3)

    def forward(self, u, c_noise, cond=None):
        return self.lin(u)


def test_denoiser_harness_fails_on_a_network_blind_to_the_noise_level() -> None:
    with pytest.raises(AssertionError, match="c_noise"):
        check_denoiser(_IgnoresNoiseLevel, DenoiserSpec((3,), (3,), (3,)))


class _ScoreTimesOnePointFive(Loss):
    """DSM applied to the model's score divided by 1.5: minimised by 1.5 x the true score."""

    def __init__(self) -> None:
        super().__init__()
        self.dsm = LOSSES.get("dsm")(target="score")

    def forward(self, model, sde, x0, cond=None, *, generator=None):
        def shrunk(u, t):
            p = model(u, t)
            return Prediction(p.u_t, p.t, p.score() / 1.5, p.kernel, "score")

        return self.dsm(shrunk, sde, x0, generator=generator)


def test_loss_harness_fails_on_a_loss_not_minimised_by_the_score() -> None:
    with pytest.raises(AssertionError, match="not minimised"):
        check_loss(_ScoreTimesOnePointFive(), VPSDE())
