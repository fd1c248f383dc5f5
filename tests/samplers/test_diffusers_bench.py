"""The diffusers comparison of tools/bench_samplers.py (benchmark-only extra ``bench``).

Its W2 is honest when (a) the exact propagation equals a direct run of the unchanged scheduler
loop on random starts and random injected noise, (b) the eps-model is the exact one, (c) the
options the sweep treats as no-ops are no-ops, and (d) diffusers' DDIM on the trailing grid gives
diffkit's DDIM W2 on the same grid.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffkit.gaussian import GaussianScore, Modes, cifar10_spectrum, data_cov, propagate, w2_to_data
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.vp import VPSDE

pytest.importorskip("diffusers")
_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench_samplers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CASES = [
    ("DPMSolverMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, 0.0),
    (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "use_lu_lambdas": True},
        0.0,
    ),
    (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver", "final_sigmas_type": "sigma_min"},
        0.0,
    ),
    (
        "UniPCMultistepScheduler",
        {"solver_order": 3, "solver_type": "bh1", "final_sigmas_type": "sigma_min"},
        0.0,
    ),
    ("UniPCMultistepScheduler", {"solver_order": 2, "disable_corrector": list(range(9))}, 0.0),
    ("DEISMultistepScheduler", {"solver_order": 3, "use_exponential_sigmas": True}, 0.0),
    ("EulerDiscreteScheduler", {"use_beta_sigmas": True}, 0.0),
    ("HeunDiscreteScheduler", {"timestep_spacing": "leading"}, 0.0),
    ("DDIMScheduler", {"timestep_spacing": "trailing"}, 1.0),
]


@pytest.mark.parametrize(("cls_name", "config", "eta"), CASES)
def test_exact_propagation_equals_direct_run_on_random_inputs(bench, cls_name, config, eta):
    """Output of the scheduler on a random start (and random noise for the stochastic ones)
    equals the unit responses combined with the same draws: the propagation is exact."""
    gen = torch.Generator().manual_seed(0)
    lam = torch.rand(40, generator=gen, dtype=torch.float64) * 3 + 1e-3
    steps = 6
    sched = bench.make_scheduler(cls_name, config, steps)
    rows, calls = bench.scheduler_response(sched, lam, eta)
    assert calls == len(sched.timesteps)
    stochastic = bench.is_stochastic(sched, eta)
    assert rows.shape[0] == (1 + len(sched.timesteps) if stochastic else 1)

    sched = bench.make_scheduler(cls_name, config, steps)
    model = bench.DiffusersEpsModel(lam)
    g = torch.randn(3, lam.numel(), generator=gen, dtype=torch.float64)
    z = torch.randn(len(sched.timesteps), 3, lam.numel(), generator=gen, dtype=torch.float64)
    x = g * float(sched.init_noise_sigma)
    kwargs = {"eta": eta} if eta > 0 else {}
    for k, t in enumerate(sched.timesteps):
        if stochastic:
            kwargs["variance_noise"] = z[k]
        x = sched.step(model(sched.scale_model_input(x, t), t), t, x, **kwargs).prev_sample
    expected = g * rows[0]
    if stochastic:
        expected = expected + torch.einsum("kbn,kn->bn", z, rows[1:])
    # DPM-Solver and Euler cast the sample to float32 inside step(): agreement to float32
    # rounding (amplified over the steps); the others run in float64 throughout.
    tol = 1e-4 if cls_name in ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler") else 1e-10
    torch.testing.assert_close(x.to(torch.float64), expected, rtol=tol, atol=tol)


def test_noop_options_are_noops(bench) -> None:
    """The options the sweep merges give identical outputs (so merging loses nothing)."""
    lam = torch.linspace(0.01, 3.0, 32, dtype=torch.float64)

    def out(config: dict, steps: int) -> torch.Tensor:
        sched = bench.make_scheduler("DPMSolverMultistepScheduler", config, steps)
        return bench.scheduler_response(sched, lam)[0]

    base = {"solver_order": 3, "use_karras_sigmas": True}
    # lower_order_final acts only below 15 steps
    assert torch.equal(out({**base, "lower_order_final": False}, 16), out(base, 16))
    assert not torch.equal(out({**base, "lower_order_final": False}, 8), out(base, 8))
    # euler_at_final is a no-op with a zero final sigma
    assert torch.equal(out({**base, "euler_at_final": True}, 8), out(base, 8))
    # order 1 reads no solver_type
    one = {"solver_order": 1}
    assert torch.equal(out({**one, "solver_type": "heun"}, 8), out(one, 8))
    # the sweep plans one run for those pairs
    configs = [({**base, "lower_order_final": f}, 20) for f in (True, False)]
    keys = {bench.canonical_solver_options("DPMSolverMultistepScheduler", c, s) for c, s in configs}
    assert len(keys) == 1


def test_diffusers_ddim_w2_equals_diffkit_ddim_on_ddpm_schedule(bench) -> None:
    lam = cifar10_spectrum()
    sched = bench.make_scheduler("DDIMScheduler", {"timestep_spacing": "trailing"}, 10)
    var, calls = bench.scheduler_variance(sched, lam)
    theirs = float(w2_to_data(lam, var.reshape(-1, 1, 1)))
    assert calls == 10
    sde = VPSDE(schedule="ddpm", t_min=0.0)
    modes = Modes(sde, (lam.numel(),))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = torch.ones(modes.n, 1, 1, dtype=torch.float64)
    cov, nfe = propagate(DDIM(10, grid="uniform"), sde, model, start, modes)
    ours = float(w2_to_data(lam, cov))
    assert nfe == 10
    # diffkit interpolates log alpha-bar between DDPM indices; diffusers' grid is the same
    # 10 integer indices, so both are the same DDIM up to the float64 tables
    assert abs(ours - theirs) < 1e-6 * ours, (ours, theirs)


def test_eps_model_is_exact_at_integer_timesteps(bench) -> None:
    """eps(x, i) = sqrt(1 - ab_i) x / (ab_i lam + 1 - ab_i) equals diffkit's exact eps."""
    lam = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    eps_model = bench.DiffusersEpsModel(lam)
    sde = VPSDE(schedule="ddpm")
    score = GaussianScore(sde, data_cov(sde, lam))
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    for i in (0, 137, 999):
        ref = score(x, torch.tensor([(i + 1) / 1000], dtype=torch.float64)).eps()
        torch.testing.assert_close(eps_model(x, i), ref, rtol=1e-10, atol=1e-12)


def test_sweep_plan_covers_every_scheduler_and_merges_grids(bench) -> None:
    """Every scheduler family is in the sweep; spacing options collapse under sigma transforms."""
    runs, counts = bench.plan_diffusers_sweep([10], quick=False)
    classes = {r[0] for r in runs}
    assert classes == {
        "DPMSolverMultistepScheduler",
        "DEISMultistepScheduler",
        "UniPCMultistepScheduler",
        "DDIMScheduler",
        "EulerDiscreteScheduler",
        "HeunDiscreteScheduler",
    }
    assert counts["distinct_runs"] == len(runs) < counts["configurations"]
    assert sum(r[4] for r in runs) + counts["unsupported"] == counts["configurations"]
    algos = {r[1].get("algorithm_type") for r in runs if r[0] == "DPMSolverMultistepScheduler"}
    assert algos == {"dpmsolver++", "dpmsolver", "sde-dpmsolver++"}
