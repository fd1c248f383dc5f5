"""Convergence orders against the exact PF-ODE flow map, and EM's weak order on variances.

Gaussian data ``N(0, diag LAM)`` under VP: the exact PF-ODE maps ``u_T`` to
``u_T sqrt(C_s / C_T)`` per eigendirection (``C_t = alpha_t^2 LAM + sigma_t^2``), so the error of
every deterministic sampler is computed without any reference solver
(docs/background/samplers.md#exactness).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.heun import Heun
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.vp import VPSDE

LAM = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)
U_T = torch.tensor([[1.0, -0.5, 0.3]], dtype=torch.float64)
STEPS = [40, 80, 160]

CASES = {
    "ddim": (lambda n: DDIM(n), 1),
    "euler": (lambda n: EulerMaruyama(n, grid="quadratic", lam=0.0), 1),
    "heun": (lambda n: Heun(n, grid="quadratic"), 2),
    "heun_edm_grid": (lambda n: Heun(n, grid="edm"), 2),
    "gddim": (lambda n: GDDIM(n), 1),
    "gddim_multistep2": (lambda n: GDDIM(n, order=2), 3),
    **{f"deis_tab{r}": (partial(DEIS, order=r), r + 1) for r in range(4)},
    **{f"deis_rhoab{r}": (partial(DEIS, order=r, variant="rhoab"), r + 1) for r in range(4)},
    **{f"dpm_solver{k}_heun": (partial(DPMSolver, order=k, solver_type="heun"), k) for k in (1, 3)},
    "dpm_solver2_heun": (partial(DPMSolver, order=2, solver_type="heun"), 2),
    "dpm_solver2_midpoint": (partial(DPMSolver, order=2), 2),
    # the published 3M weights (c = 1/2, diffusers' 3M) converge at order 2: see dpm_solver.py
    "dpm_solver3_midpoint": (partial(DPMSolver, order=3), 2),
    # UniPC: UniC-p makes order p + 1; the last step is not corrected (UniP-p, local error
    # h^(p+1)), and diffusers' lower_order_final would make it UniP-1 (order 2 overall).
    **{
        f"unipc{p}_{bh}": (partial(UniPC, order=p, solver_type=bh, lower_order_final=False), p + 1)
        for p in (1, 2, 3)
        for bh in ("bh1", "bh2")
    },
    **{f"unip{p}": (partial(UniPC, order=p, corrector=False), p) for p in (2, 3)},
    **{
        f"dpm_solver{k}_eps": (
            partial(DPMSolver, order=k, solver_type="heun", algorithm="dpmsolver"),
            k,
        )
        for k in (2, 3)
    },
    "unipc2_eps": (partial(UniPC, order=2, predict_x0=False, lower_order_final=False), 3),
    **{f"deis_logrho{r}": (partial(DEIS, order=r, variant="logrho"), r + 1) for r in range(4)},
}


# Third-order DPM-Solver(++) with the Taylor weights is pre-asymptotic at these NFE: its error
# falls faster than h^3 (slope 4.2 from 80 to 160 steps, 3.6 from 160 to 320).
SLOPE_RANGE = {"dpm_solver3_heun": (2.9, 4.5), "dpm_solver3_eps": (2.9, 4.5)}


def _errors(make, gaussian_score) -> list[float]:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.diagonal(LAM[None]))
    t = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    c = model.marginal_cov(t).coef[:, :, 0, 0]
    exact = U_T * (c[1] / c[0]).sqrt()
    errs = []
    for n in STEPS:
        r = make(n).sample(model, sde, (1, 3), u_T=U_T, dtype=torch.float64)
        errs.append((r.x - exact).abs().max().item())
    return errs


@pytest.mark.parametrize("name", list(CASES))
def test_deterministic_order(name: str, gaussian_score) -> None:
    make, order = CASES[name]
    errs = _errors(make, gaussian_score)
    slope = float(np.log(errs[-2] / errs[-1]) / np.log(2))
    # Degree-3 DEIS is still pre-asymptotic here (its lower-order warm-start steps and the
    # quadratic grid's tiny final steps), so its slope is ~3.3 rather than 4.
    low = order - 0.5 if order < 4 else 3.0
    low, high = SLOPE_RANGE.get(name, (low, order + 0.6))
    assert low < slope < high, (errs, slope)
    assert errs[-1] < errs[0]


def test_error_falls_with_order(gaussian_score) -> None:
    """At a fixed NFE, DEIS's error falls with the extrapolation degree
    (docs/background/samplers.md#deis)."""
    errs = [_errors(CASES[f"deis_tab{r}"][0], gaussian_score)[0] for r in range(4)]
    assert errs == sorted(errs, reverse=True), errs


def _em_variance(steps: int, gaussian_score, exact_variance) -> torch.Tensor:
    """Exact output variance of reverse-SDE EM started at p_T, with the real sampler loop.

    (The loop is linear in (u_T, z_1, ..., z_N); see ``noise_row_variance`` in conftest.)
    """
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.diagonal(LAM[None]))
    c_t = model.marginal_cov(torch.tensor([sde.T], dtype=torch.float64)).coef[0, :, 0, 0]
    sampler = EulerMaruyama(steps, grid="uniform", lam=1.0)
    var, draws = exact_variance(sampler, model, sde, c_t, steps)
    assert draws == steps
    return var


def test_em_weak_order_one_on_variances(gaussian_score, exact_variance) -> None:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.diagonal(LAM[None]))
    target = model.marginal_cov(torch.tensor([sde.t_min], dtype=torch.float64)).coef[0, :, 0, 0]
    steps = [50, 100, 200]
    variances = [_em_variance(n, gaussian_score, exact_variance) for n in steps]
    errs = [(v - target).abs().max().item() for v in variances]
    slope = float(np.log(errs[-2] / errs[-1]) / np.log(2))
    assert 0.8 < slope < 1.3, (errs, slope)
