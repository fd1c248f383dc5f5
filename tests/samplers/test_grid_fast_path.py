"""The samplers' grid fast path against the generic path.

``Sampler.sample`` evaluates the model with ``CountingModel.at(u, i)`` (precomputed per-grid
conditioning for a ``Parameterization``; Python-float step coefficients for scalar SDEs). Hiding
``on_grid`` behind a plain function forces the generic ``model(u, t)`` path; both must give the
same samples (float32 rounding apart) and the same NFE, for every sampler on every SDE.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.samplers.base import CountingModel
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.exponential_integrator import ExponentialIntegrator
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.heun import Heun
from diffkit.samplers.pc import PredictorCorrector
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE


class SmallResidual(Denoiser):
    """A small non-linear correction on top of the Gaussian residual (keeps samples bounded)."""

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        c = c_noise.reshape(-1, *[1] * (u.dim() - 1))
        return 0.05 * torch.sin(2 * u) + 0.01 * torch.tanh(c)


SDES = {
    "vp": (VPSDE, (2,)),
    "ve": (VESDE, (2,)),
    "cld": (CLDSDE, (2,)),
    "blur": (lambda: BlurSDE(image_size=(4, 4)), (1, 4, 4)),
}

SAMPLERS = {
    "euler_maruyama": lambda: EulerMaruyama(steps=8),
    "euler_maruyama_ode": lambda: EulerMaruyama(steps=8, lam=0.0),
    "heun": lambda: Heun(steps=5, grid="quadratic"),
    "heun_churn": lambda: Heun(steps=5, grid="quadratic", s_churn=2.0),
    "heun_final_zero": lambda: Heun(steps=5, final_zero=True),  # the grid ends at t = 0
    "ddim": lambda: DDIM(steps=8),
    "ddim_eta": lambda: DDIM(steps=8, eta=0.5, denoise_final=True),
    "deis": lambda: DEIS(steps=8, order=3),
    "gddim": lambda: GDDIM(steps=8, order=2),
    "gddim_stochastic": lambda: GDDIM(steps=8, lam=1.0),
    "pc": lambda: PredictorCorrector(steps=6),
    "pc_ddim": lambda: PredictorCorrector(steps=6, predictor="ddim", corrector_first=False),
    "ei": lambda: ExponentialIntegrator(steps=8),
    "dpm_solver": lambda: DPMSolver(steps=8, order=3),
    "unipc": lambda: UniPC(steps=8, order=3, solver_type="bh1"),
}


@pytest.mark.parametrize("sde_name", list(SDES))
@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
def test_fast_path_equals_generic_path(sde_name: str, sampler_name: str) -> None:
    make_sde, data_shape = SDES[sde_name]
    sde = make_sde()
    state = sde.state_shape(data_shape)
    spec = DenoiserSpec(data_shape, state, state)
    model = Parameterization(sde, SmallResidual(spec), "eps", residual="gaussian")
    sampler = SAMPLERS[sampler_name]()

    def generic(u: Tensor, t: Tensor):  # no on_grid: the per-call path
        return model(u, t)

    runs = []
    for score_model in (model, generic):
        gen = torch.Generator().manual_seed(3)
        runs.append(sampler.sample(score_model, sde, (16, *data_shape), generator=gen))
    fast, slow = runs
    assert model._grid_tables  # the first run took the precomputed path
    assert fast.nfe == slow.nfe == sampler.expected_nfe(sde)
    assert bool(torch.isfinite(slow.x).all())
    scale = 1.0 + slow.x.abs().max().item()
    torch.testing.assert_close(fast.x, slow.x, rtol=1e-4, atol=1e-4 * scale)


def test_step_ops_are_floats_for_scalar_operators_and_rows_otherwise() -> None:
    like = torch.zeros(3, 2)
    scalar = LinearOp.scalar(torch.tensor([0.5, 2.0, -1.0], dtype=torch.float64))
    rows = scalar.steps(like)
    assert [r.scale for r in rows] == [0.5, 2.0, -1.0] and all(r.op is None for r in rows)
    assert all(isinstance(r.scale, float) for r in rows)
    gen = torch.Generator().manual_seed(0)
    block = LinearOp.block(torch.randn(3, 2, 2, generator=gen, dtype=torch.float64))
    u = torch.randn(4, 2, 5, generator=gen)
    brows = block.steps(u)
    assert all(r.op.n == 1 and r.op.coef.dtype == u.dtype for r in brows)
    acc = torch.randn(4, 2, 5, generator=gen)
    for i in range(3):
        torch.testing.assert_close(brows[i](u), block[i].apply(u))
        torch.testing.assert_close(brows[i].add(acc, u), acc + block[i].apply(u))
        x = u[:, 0]
        torch.testing.assert_close(rows[i](x), scalar[i].apply(x))
        torch.testing.assert_close(rows[i].add(x, x), x + scalar[i].apply(x))


def test_counting_model_at_needs_a_grid() -> None:
    model = CountingModel(lambda u, t: None)
    with pytest.raises(RuntimeError, match="needs the grid"):
        model.at(torch.zeros(1, 2), 0)
    assert model.nfe == 0


def test_coefficient_caches_are_per_grid_not_per_batch() -> None:
    """Plans and the model's grid tables are reused across batch sizes and calls."""
    sde = VPSDE()
    spec = DenoiserSpec((2,), (2,), (2,))
    model = Parameterization(sde, SmallResidual(spec), "eps", residual="gaussian")
    sampler = DEIS(steps=6, order=2)
    plans, tables = set(), set()
    for batch in (4, 16, 4, 64):
        res = sampler.sample(model, sde, (batch, 2), generator=torch.Generator().manual_seed(0))
        assert res.x.shape == (batch, 2) and res.trajectory is None
        plans.add(id(sampler.plan(sde)))
        tables |= {id(rows) for _, rows in model._grid_tables.values()}
    assert len(plans) == 1 and len(sampler._plans) == 1
    assert len(tables) == 1 and len(model._grid_tables) == 1
