"""Honest NFE counts, trajectories, reproducibility and clear errors for every sampler."""

from __future__ import annotations

import pytest
import torch

from diffkit.prediction import Prediction
from diffkit.registry.builtins import BUILTINS
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
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE

SAMPLERS = {
    "em": lambda: EulerMaruyama(7),
    "em_denoise": lambda: EulerMaruyama(7, denoise_final=True),
    "ei": lambda: ExponentialIntegrator(7),
    "ddim": lambda: DDIM(7, eta=0.5),
    "heun": lambda: Heun(7),
    "heun_t0": lambda: Heun(7, grid="quadratic", t_min=0.0),
    "heun_final_zero": lambda: Heun(7, final_zero=True),
    "heun_churn": lambda: Heun(7, s_churn=10.0),
    "deis": lambda: DEIS(7, order=3),
    "gddim": lambda: GDDIM(7, order=2),
    "gddim_stochastic": lambda: GDDIM(7, lam=0.5),
    "pc": lambda: PredictorCorrector(7, n_corrector=2),
    "pc_ddim": lambda: PredictorCorrector(7, predictor="ddim", corrector_first=False),
    "dpm_solver": lambda: DPMSolver(7, order=3),
    "dpm_solver_sde": lambda: DPMSolver(7, algorithm="sde-dpmsolver++", denoise_final=True),
    "unipc": lambda: UniPC(7, order=3),
}
EXPECTED = {"heun": 14, "heun_t0": 13, "heun_final_zero": 13, "heun_churn": 14, "pc": 21}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_counting_model_matches_expected_nfe(name: str, gaussian_score) -> None:
    sde = VPSDE()
    sampler = SAMPLERS[name]()
    model = CountingModel(gaussian_score(sde, LinearOp.scalar(0.5)))
    gen = torch.Generator().manual_seed(0)
    res = sampler.sample(model, sde, (4, 3), generator=gen, dtype=torch.float64)
    assert model.nfe == res.nfe == sampler.expected_nfe(sde)
    assert name not in EXPECTED or res.nfe == EXPECTED[name]
    assert torch.isfinite(res.x).all()
    assert res.trajectory is None


def test_trajectory_and_reproducibility(gaussian_score) -> None:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.scalar(0.5))
    sampler = DDIM(5, eta=1.0)
    runs = [
        sampler.sample(
            model,
            sde,
            (3, 2),
            generator=torch.Generator().manual_seed(1),
            record_trajectory=True,
            dtype=torch.float64,
        )
        for _ in range(2)
    ]
    assert len(runs[0].trajectory) == 6
    torch.testing.assert_close(runs[0].x, runs[1].x, rtol=0, atol=0)
    torch.testing.assert_close(runs[0].trajectory[-1], runs[0].x)


def test_velocity_only_model_is_refused_with_advice(gaussian_score) -> None:
    sde = VPSDE()
    base = gaussian_score(sde, LinearOp.scalar(0.5))

    def velocity_only(u, t):
        p = base(u, t)
        return Prediction(p.u_t, p.t, p.raw, p.kernel, p.target, velocity_only=True)

    for sampler in (DDIM(3), DEIS(3), GDDIM(3), PredictorCorrector(3), DPMSolver(3), UniPC(3)):
        with pytest.raises(ValueError, match="velocity score"):
            sampler.sample(velocity_only, sde, (2, 2), dtype=torch.float64)
    # EM and Heun use only G G^T score: they run.
    for sampler in (EulerMaruyama(3), Heun(3)):
        sampler.sample(velocity_only, sde, (2, 2), dtype=torch.float64)


def test_model_wrapper_hook(gaussian_score) -> None:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.scalar(0.5))
    calls = []
    sampler = DDIM(4)
    sampler.model_wrapper = lambda m: lambda u, t: calls.append(1) or m(u, t)
    sampler.sample(model, sde, (2, 2), dtype=torch.float64)
    assert len(calls) == 4


def test_invalid_options_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"DEIS\.order"):
        DEIS(order=4)
    with pytest.raises(ValueError, match="variant"):
        DEIS(variant="lambda")
    with pytest.raises(ValueError, match="GDDIM"):
        GDDIM(lam=0.5, order=2)
    with pytest.raises(ValueError, match=r"DPMSolver\.order"):
        DPMSolver(order=4)
    with pytest.raises(ValueError, match=r"DPMSolver\.solver_type"):
        DPMSolver(solver_type="bh2")
    with pytest.raises(ValueError, match=r"DPMSolver\.algorithm"):
        DPMSolver(algorithm="dpm-solver")
    with pytest.raises(ValueError, match=r"UniPC\.order"):
        UniPC(order=0)
    with pytest.raises(ValueError, match=r"UniPC\.solver_type"):
        UniPC(solver_type="midpoint")
    with pytest.raises(ValueError, match="t_min"):
        PredictorCorrector(3, t_min=0.0, grid="quadratic", corrector_first=False).plan(VPSDE())


def test_registered() -> None:
    names = {"euler_maruyama", "ddim", "heun", "deis", "gddim", "pc", "dpm_solver", "unipc"}
    assert names <= set(BUILTINS["sampler"])


def test_sampler_pickles_and_replans(gaussian_score) -> None:
    import pickle

    sde = VPSDE()
    sampler = DEIS(4, order=2)
    sampler.plan(sde)
    clone = pickle.loads(pickle.dumps(sampler))
    model = gaussian_score(sde, LinearOp.scalar(0.5))
    u_T = torch.ones(1, 2, dtype=torch.float64)
    a = sampler.sample(model, sde, (1, 2), u_T=u_T, dtype=torch.float64).x
    b = clone.sample(model, sde, (1, 2), u_T=u_T, dtype=torch.float64).x
    torch.testing.assert_close(a, b, rtol=0, atol=0)
