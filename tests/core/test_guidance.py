"""Classifier-free guidance as a score-model wrapper: scale 1 is the conditional model bit for
bit, the guided prediction is the closed-form combination in every target and on both the
per-call and the per-grid path, NFE counts both network evaluations, and label dropout replaces
a seeded fraction of the training labels by the null class."""

from __future__ import annotations

import functools

import pytest
import torch

from diffkit.denoisers.parameterization import Parameterization
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.guidance import NULL_CLASS, GuidedModel
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.module import DiffusionModule
from diffkit.prediction import on_grid
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.heun import Heun
from diffkit.sdes.vp import VPSDE

TINY = functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8)


def conditional_module(target: str = "eps", **kw) -> DiffusionModule:
    torch.manual_seed(0)
    m = DiffusionModule(
        VPSDE(),
        TINY,
        loss=DenoisingScoreMatching(target=target),
        sampler=DDIM(4),
        data_shape=(3,),
        num_classes=3,
        **kw,
    )
    for p in m.parameters():  # zero-initialised output layers would hide the labels
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def inputs(b: int = 6):
    g = torch.Generator().manual_seed(5)
    u = torch.randn(b, 3, generator=g)
    t = torch.rand(b, generator=g, dtype=torch.float64) * 0.9 + 0.05
    y = torch.arange(b) % 3
    return u, t, y


@pytest.mark.parametrize("batched", [True, False])
def test_scale_one_is_the_conditional_model(batched) -> None:
    model = conditional_module().model
    u, t, y = inputs()
    guided = GuidedModel(model, y, 1.0, batched=batched)
    assert torch.equal(guided(u, t).raw, model(u, t, y).raw)
    times = DDIM(4).plan(model.sde).times
    grid, ref = on_grid(guided, times), model.on_grid(times, y)
    assert torch.equal(grid(u, 2).raw, ref(u, 2).raw)
    assert guided.evaluations_per_call == 1


@pytest.mark.parametrize("target", ["eps", "x0", "v"])
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("w", [0.0, 3.0])
def test_guided_eps_is_the_closed_form_combination(target, batched, w) -> None:
    model = conditional_module(target).model
    u, t, y = inputs()
    eps_c = model(u, t, y).eps().double()
    eps_u = model(u, t, torch.full_like(y, NULL_CLASS)).eps().double()
    want = eps_u + w * (eps_c - eps_u)
    guided = GuidedModel(model, y, w, batched=batched)
    torch.testing.assert_close(guided(u, t).eps().double(), want, rtol=1e-5, atol=1e-5)
    # the per-grid path (precomputed conditioning) at a grid time
    times = DDIM(4).plan(model.sde).times
    tg = times[1].expand(u.shape[0])
    e_c, e_u = model(u, tg, y).eps().double(), model(u, tg, -torch.ones_like(y)).eps().double()
    got = on_grid(guided, times)(u, 1)
    assert got.raw.shape == u.shape and got.t.shape == (u.shape[0],)
    torch.testing.assert_close(got.eps().double(), e_u + w * (e_c - e_u), rtol=1e-5, atol=1e-5)


def test_nfe_doubles_under_guidance() -> None:
    m = conditional_module()
    y = torch.arange(4) % 3
    plain = m.sample(4, cond=y)
    guided = m.sample(4, cond=y, guidance_scale=2.0)
    assert plain.nfe == 4 and guided.nfe == 8
    assert not torch.allclose(plain.x, guided.x)
    heun = Heun(3)
    assert m.sample(4, cond=y, sampler=heun, guidance_scale=2.0).nfe == 2 * heun.expected_nfe()
    # the module's default scale applies when none is passed; scale 1 gives the same samples
    assert torch.equal(m.sample(4, cond=y, guidance_scale=1.0).x, plain.x)
    m.guidance_scale = 2.0
    assert torch.equal(m.sample(4, cond=y).x, guided.x)


def test_guidance_needs_labels() -> None:
    m = conditional_module()
    with pytest.raises(ValueError, match="needs class labels"):
        m.sample(4, guidance_scale=2.0)


def test_label_dropout_is_seeded_and_has_its_rate() -> None:
    m = conditional_module(label_dropout=0.25)
    batch = {"x": torch.zeros(4000, 3), "y": torch.arange(4000) % 3}
    a, b = m._cond(batch, step=7), m._cond(batch, step=7)
    assert torch.equal(a, b) and not torch.equal(a, m._cond(batch, step=8))
    dropped = a == NULL_CLASS
    assert abs(float(dropped.float().mean()) - 0.25) < 0.03  # ~4.5 standard errors
    assert torch.equal(a[~dropped], batch["y"][~dropped])
    assert torch.equal(m._cond(batch), batch["y"])  # validation: no dropout
    with pytest.raises(ValueError, match="needs class labels"):
        DiffusionModule(VPSDE(), TINY, data_shape=(3,), label_dropout=0.1)


def test_parameterization_null_label_is_the_unconditional_row() -> None:
    model: Parameterization = conditional_module().model
    u, t, _ = inputs()
    none = model(u, t, None).raw
    assert torch.equal(model(u, t, torch.full((6,), NULL_CLASS)).raw, none)
