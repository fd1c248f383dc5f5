"""diffkit's log-SNR multistep samplers equal diffusers' schedulers on diffusers' own timesteps.

``VPSDE(schedule="ddpm")`` is DDPM's discrete chain with index ``i`` at ``t = (i + 1) / 1000``;
the schedulers' ``sigmas`` are replaced by diffkit's float64 noise levels at those times (and 0 at
the end, ``final_sigmas_type="zero"``), so both sides walk one float64 schedule. diffusers'
``DPMSolverMultistepScheduler.step`` casts the sample to float32; here its module sees
``float32`` as float64, so both sides compute in float64. The model is the exact Gaussian
denoiser (diffusers gets ``x0`` with ``prediction_type="sample"``).
"""

from __future__ import annotations

import types

import pytest
import torch

from diffkit.samplers.deis import DEIS
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

N_TRAIN = 1000
BATCH, DIM = 4, 3


class _Float64Torch(types.ModuleType):
    """``torch`` as a scheduler module sees it, with ``float32`` meaning float64."""

    def __getattr__(self, name: str):
        return torch.float64 if name == "float32" else getattr(torch, name)


def _on_grid(cls, grid: torch.Tensor, **kwargs):
    """``cls`` on the explicit decreasing grid ``grid``."""

    class OnGrid(cls):
        def times(self, sde):
            return grid

    return OnGrid(steps=len(grid) - 1, **kwargs)


def _run_both(
    sched, make_sampler, steps: int, gaussian_score, noise: bool = False, final: str | None = None
):
    sde = VPSDE(schedule="ddpm")
    sched.set_timesteps(steps)
    idx = sched.timesteps.to(torch.int64)
    last = 0.0 if (final or sched.config.final_sigmas_type) == "zero" else 1.0 / N_TRAIN
    grid = torch.cat([(idx.to(torch.float64) + 1) / N_TRAIN, torch.tensor([last]).double()])
    sched.sigmas = sde.noise_level(grid)
    model = gaussian_score(sde, LinearOp.diagonal(torch.tensor([[0.05, 0.5, 2.0]])))
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn(BATCH, DIM, generator=gen, dtype=torch.float64)
    z = torch.randn(steps, BATCH, DIM, generator=gen, dtype=torch.float64)

    sampler = make_sampler(grid)
    draws = iter(z)
    sampler.noise_source = lambda u: next(draws)
    ours = sampler.sample(model, sde, (BATCH, DIM), u_T=x_T, dtype=torch.float64)
    assert ours.nfe == steps

    x = x_T.clone()
    for i, ti in enumerate(idx):
        x0 = model(x, grid[i].expand(BATCH)).x0()
        kw = {"variance_noise": z[i]} if noise else {}
        x = sched.step(x0, int(ti), x, **kw).prev_sample
    assert x.dtype == torch.float64
    return ours.x, x


@pytest.mark.parametrize(
    ("order", "solver_type", "algorithm", "lower_order_final", "steps"),
    [
        (2, "midpoint", "dpmsolver++", True, 10),
        (2, "heun", "dpmsolver++", True, 10),
        (2, "midpoint", "dpmsolver++", False, 10),
        (3, "midpoint", "dpmsolver++", True, 12),
        (3, "midpoint", "dpmsolver++", False, 12),
        (3, "midpoint", "dpmsolver++", True, 20),
        (1, "midpoint", "sde-dpmsolver++", True, 10),
        (2, "midpoint", "sde-dpmsolver++", True, 10),
        (2, "heun", "sde-dpmsolver++", True, 10),
        (2, "midpoint", "dpmsolver", True, 10),
        (2, "heun", "dpmsolver", True, 10),
        (3, "midpoint", "dpmsolver", False, 12),
    ],
)
def test_dpm_solver_matches_diffusers(
    order, solver_type, algorithm, lower_order_final, steps, gaussian_score, monkeypatch
) -> None:
    module = importlib_module(diffusers.DPMSolverMultistepScheduler)
    monkeypatch.setattr(module, "torch", _Float64Torch("torch"))
    sched = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        solver_order=order,
        solver_type=solver_type,
        algorithm_type=algorithm,
        lower_order_final=lower_order_final,
        prediction_type="sample",
        # noise prediction cannot step into zero noise
        final_sigmas_type="sigma_min" if algorithm == "dpmsolver" else "zero",
    )

    def make(grid):
        return _on_grid(
            DPMSolver,
            grid,
            order=order,
            solver_type=solver_type,
            algorithm=algorithm,
            lower_order_final=lower_order_final,
        )

    ours, ref = _run_both(sched, make, steps, gaussian_score, noise=algorithm != "dpmsolver++")
    err = (ours - ref).abs().max().item()
    assert err < 1e-6, err


def importlib_module(cls) -> types.ModuleType:
    import sys

    return sys.modules[cls.__module__]


@pytest.mark.parametrize(
    ("order", "solver_type", "corrector", "lower_order_final", "steps", "predict_x0"),
    [
        (1, "bh2", True, True, 10, True),
        (2, "bh1", True, True, 10, True),
        (2, "bh2", True, True, 10, True),
        (3, "bh1", True, True, 12, True),
        (3, "bh2", True, True, 12, True),
        (2, "bh2", False, True, 10, True),
        (3, "bh2", True, False, 10, True),
        (3, "bh1", False, False, 12, True),
        (2, "bh2", True, True, 10, False),
        (3, "bh1", True, True, 12, False),
    ],
)
def test_unipc_matches_diffusers(
    order, solver_type, corrector, lower_order_final, steps, predict_x0, gaussian_score
) -> None:
    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        solver_order=order,
        solver_type=solver_type,
        lower_order_final=lower_order_final,
        disable_corrector=[] if corrector else list(range(steps)),
        predict_x0=predict_x0,
        prediction_type="sample",
        # B(h) = h is infinite on a last step into zero noise (diffusers returns nan there)
        final_sigmas_type="zero"
        if solver_type == "bh2" and lower_order_final and predict_x0
        else "sigma_min",
    )

    def make(grid):
        return _on_grid(
            UniPC,
            grid,
            order=order,
            solver_type=solver_type,
            corrector=corrector,
            lower_order_final=lower_order_final,
            predict_x0=predict_x0,
        )

    ours, ref = _run_both(sched, make, steps, gaussian_score)
    err = (ours - ref).abs().max().item()
    assert err < 1e-6, err


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # diffusers' np.log on tensors
@pytest.mark.parametrize(("order", "steps"), [(1, 10), (2, 10), (2, 20)])
def test_deis_logrho_matches_diffusers(order: int, steps: int, gaussian_score) -> None:
    """diffusers' DEIS is lambda-domain DEIS: eps Lagrange-interpolated in log rho and
    integrated in rho (its ``solver_order`` counts values: ours + 1); it ends at DDPM index 0."""
    sched = diffusers.DEISMultistepScheduler(
        num_train_timesteps=N_TRAIN,
        solver_order=order + 1,
        lower_order_final=False,
        prediction_type="sample",
    )

    def make(grid):
        return _on_grid(DEIS, grid, order=order, variant="logrho")

    ours, ref = _run_both(sched, make, steps, gaussian_score, final="sigma_min")
    err = (ours - ref).abs().max().item()
    assert err < 1e-6, err
