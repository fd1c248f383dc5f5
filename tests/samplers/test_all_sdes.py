"""Every sampler on every built-in SDE, written only against the LinearSDE/LinearOp interface.

Exactness checks (docs/background/samplers.md#gddim): one deterministic gDDIM step on Dirac data
equals an accurate
PF-ODE solve for CLD and blurring; Cholesky-based DDIM is far off for CLD; DEIS coefficients
agree with adaptive quadrature per 2x2 entry; stochastic gDDIM preserves Gaussian marginals.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from scipy.integrate import quad_vec, solve_ivp

from diffkit.samplers.base import CountingModel
from diffkit.samplers.ddim import DDIM, ddim_coefficients
from diffkit.samplers.deis import DEIS
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.exponential import exponential_coefficients
from diffkit.samplers.exponential_integrator import ExponentialIntegrator
from diffkit.samplers.factors import noise_factor
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.heun import Heun
from diffkit.samplers.pc import PredictorCorrector
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import time_grid


def _sde(name: str):
    module, cls, kwargs = {
        "vp": ("diffkit.sdes.vp", "VPSDE", {}),
        "vp_cosine": ("diffkit.sdes.vp", "VPSDE", {"schedule": "cosine"}),
        "vp_ddpm": ("diffkit.sdes.vp", "VPSDE", {"schedule": "ddpm"}),
        "ve": ("diffkit.sdes.ve", "VESDE", {}),
        "ve_edm": ("diffkit.sdes.ve", "VESDE", {"schedule": "edm"}),
        "cld": ("diffkit.sdes.cld", "CLDSDE", {}),
        "blur": ("diffkit.sdes.blur", "BlurSDE", {"image_size": (4, 4)}),
    }[name]
    return getattr(importlib.import_module(module), cls)(**kwargs)


SDES = ["vp", "vp_cosine", "vp_ddpm", "ve", "ve_edm", "cld", "blur"]
DATA_SHAPE = {"blur": (1, 4, 4)}


def _data_cov(sde, scale: float = 0.5) -> LinearOp:
    """State covariance of ``N(0, scale I)`` data (CLD: plus the initial velocity variance)."""
    if sde.block == 2:
        eps = sde.numerical_eps
        c = torch.tensor([[[scale + eps, 0.0], [0.0, sde.velocity_variance + eps]]])
        return LinearOp.block(c.to(torch.float64))
    return LinearOp.scalar(scale)


SAMPLERS = {
    "em": lambda: EulerMaruyama(6),
    "ei": lambda: ExponentialIntegrator(6, lam=0.7),
    "ddim": lambda: DDIM(6, eta=0.5),
    "heun": lambda: Heun(6, grid="quadratic"),
    "deis_tab": lambda: DEIS(6, order=2),
    "deis_rhoab": lambda: DEIS(6, order=3, variant="rhoab"),
    "gddim": lambda: GDDIM(6, order=1),
    "gddim_stochastic": lambda: GDDIM(6, lam=1.0),
    "pc": lambda: PredictorCorrector(6, n_corrector=1),
    "dpm_solver_3m": lambda: DPMSolver(6, order=3),
    "dpm_solver_2m_heun": lambda: DPMSolver(6, order=2, solver_type="heun"),
    "unipc_bh1": lambda: UniPC(6, order=3, solver_type="bh1"),
    "unipc_bh2": lambda: UniPC(6, order=2),
    "unipc_eps": lambda: UniPC(6, order=3, predict_x0=False),
    "dpm_solver_eps": lambda: DPMSolver(6, order=2, algorithm="dpmsolver"),
    "deis_logrho": lambda: DEIS(6, order=2, variant="logrho"),
}
SDE_ONLY_1X1 = {
    "dpm_solver_sde": lambda: DPMSolver(6, algorithm="sde-dpmsolver++"),
    "dpm_solver_sde3": lambda: DPMSolver(
        6, order=3, solver_type="heun", algorithm="sde-dpmsolver++"
    ),
}


@pytest.mark.parametrize("sde_name", SDES)
@pytest.mark.parametrize("name", [*SAMPLERS, *SDE_ONLY_1X1])
def test_every_sampler_runs_on_every_sde(sde_name: str, name: str, gaussian_score) -> None:
    sde = _sde(sde_name)
    shape = (3, *DATA_SHAPE.get(sde_name, (2,)))
    sampler = {**SAMPLERS, **SDE_ONLY_1X1}[name]()
    if name in SDE_ONLY_1X1 and sde.block == 2:
        with pytest.raises(ValueError, match=r"algorithm='dpmsolver\+\+'"):
            sampler.sample(gaussian_score(sde, _data_cov(sde)), sde, shape)
        return
    model = CountingModel(gaussian_score(sde, _data_cov(sde)))
    gen = torch.Generator().manual_seed(0)
    res = sampler.sample(model, sde, shape, generator=gen, dtype=torch.float64)
    assert res.x.shape == shape
    assert torch.isfinite(res.u).all()
    assert res.nfe == model.nfe == sampler.expected_nfe(sde)


@pytest.mark.parametrize("sde_name", SDES)
def test_deis_order_zero_is_ddim_and_gddim(sde_name: str) -> None:
    """Order 0 with factor R is the closed-form gDDIM step Psi(s,t)(u - R_t eps) + R_s eps on
    every SDE; with the kernel factor it is DDIM wherever the kernel factor is R (1x1 blocks)."""
    sde = _sde(sde_name)
    times = time_grid(sde, 7, "quadratic")
    t, s = times[:-1], times[1:]
    psi = sde.transition(s, t)
    closed = noise_factor(sde, s, "R") - psi @ noise_factor(sde, t, "R")
    c = exponential_coefficients(sde, times, 0, factor="R")
    scale = closed.coef.abs().amax()
    torch.testing.assert_close(c["C"][0].coef, closed.coef, rtol=0, atol=1e-10 * scale)
    if sde.block == 1:
        d = ddim_coefficients(sde, times, 0.0)
        k = exponential_coefficients(sde, times, 0, factor="kernel")
        torch.testing.assert_close(k["C"][0].coef, d["B"].coef, rtol=0, atol=1e-10 * scale)


@pytest.mark.parametrize("factor", ["kernel", "R"])
def test_cld_deis_coefficients_match_adaptive_quadrature(factor: str) -> None:
    sde = _sde("cld")
    times = time_grid(sde, 3, "quadratic")
    order = 2
    c = exponential_coefficients(sde, times, order, factor=factor)
    for i in range(len(times) - 1):
        t, s = float(times[i]), float(times[i + 1])
        q = min(order, i)
        nodes = [float(times[i - k]) for k in range(q + 1)]

        def f(tau: float, s: float = s, nodes: list = nodes, q: int = q) -> np.ndarray:
            tt = torch.tensor([tau], dtype=torch.float64)
            g = sde.diffusion_op(tt)
            op = sde.transition(torch.tensor([s], dtype=torch.float64), tt) @ (g @ g.T)
            op = 0.5 * (op @ noise_factor(sde, tt, factor).inv().T).coef[0].numpy().reshape(-1)
            ells = [
                np.prod([(tau - nodes[k]) / (nodes[j] - nodes[k]) for k in range(q + 1) if k != j])
                for j in range(q + 1)
            ]
            return np.concatenate([ell * op for ell in ells])

        ref, _ = quad_vec(f, s, t, epsabs=1e-13, epsrel=1e-12)
        ref = -ref.reshape(q + 1, -1)  # the integral runs from t down to s
        got = np.stack([c["C"][j].coef[i].numpy().reshape(-1) for j in range(q + 1)])
        assert np.abs(got - ref).max() <= 1e-10 * max(1.0, np.abs(ref).max()), i


def _pf_ode_solve(sde, model, u_T: torch.Tensor, s: float) -> np.ndarray:
    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        u = torch.from_numpy(y).reshape(u_T.shape)
        tt = torch.tensor([t], dtype=torch.float64)
        g = sde.diffusion_op(tt)
        v = sde.drift_op(tt).apply(u) - 0.5 * (g @ g.T).apply(model(u, tt).score())
        return v.reshape(-1).numpy()

    y0 = u_T.reshape(-1).numpy()
    sol = solve_ivp(rhs, (sde.T, s), y0, method="DOP853", rtol=1e-10, atol=1e-12)
    return sol.y[:, -1]


@pytest.mark.slow
@pytest.mark.parametrize(("sde_name", "s"), [("cld", 0.5), ("cld", 0.05), ("blur", 0.3)])
def test_gddim_one_step_exact_on_dirac_data(sde_name: str, s: float, gaussian_score) -> None:
    """eps_R is constant along the exact PF-ODE of Dirac data, so one step T -> s is exact."""
    sde = _sde(sde_name)
    gen = torch.Generator().manual_seed(3)
    shape = DATA_SHAPE.get(sde_name, (3,))
    x0 = torch.randn(1, *shape, generator=gen, dtype=torch.float64)
    if sde.block == 2:
        # "Dirac" in the gDDIM sense: R_0 R_0^T = diag(eps, gamma M + eps), mean (x0, 0).
        eps = sde.numerical_eps
        cov = LinearOp.block(
            torch.tensor([[[eps, 0.0], [0.0, sde.velocity_variance + eps]]], dtype=torch.float64)
        )
        mean = sde.lift(x0)
    else:
        cov, mean = LinearOp.scalar(0.0), x0
    model = gaussian_score(sde, cov, mean)
    state = (1, *sde.state_shape(shape))
    u_T = torch.randn(state, generator=gen, dtype=torch.float64)
    ref = _pf_ode_solve(sde, model, u_T, s)
    kw = {"grid": "uniform", "t_min": s}
    out = GDDIM(1, **kw).sample(model, sde, (1, *shape), u_T=u_T, dtype=torch.float64).u
    err = np.abs(out.reshape(-1).numpy() - ref).max() / np.abs(ref).max()
    assert err <= 1e-6, err
    if sde.block == 2:  # the same step with the Cholesky factor L_t is far off
        bad = DDIM(1, **kw).sample(model, sde, (1, *shape), u_T=u_T, dtype=torch.float64).u
        assert np.abs(bad.reshape(-1).numpy() - ref).max() / np.abs(ref).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("lam", [0.5])
def test_stochastic_gddim_preserves_gaussian_marginals_on_cld(lam: float, gaussian_score) -> None:
    """With R_0 R_0^T the data covariance, one stochastic gDDIM step maps p_t to p_s exactly.
    The covariance of the output is computed with the real sampler loop (generator-free)."""
    sde = _sde("cld")
    eps = sde.numerical_eps
    cov0 = LinearOp.block(
        torch.tensor([[[eps, 0.0], [0.0, sde.velocity_variance + eps]]], dtype=torch.float64)
    )
    model = gaussian_score(sde, cov0)
    t_T = torch.tensor([sde.T], dtype=torch.float64)
    chol_T = model.marginal_cov(t_T).cholesky().coef[0]
    u_T = torch.zeros(4, 2, 1, dtype=torch.float64)
    u_T[0, :, 0], u_T[1, :, 0] = chol_T[:, 0], chol_T[:, 1]
    calls = [0]

    def source(u: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        z = torch.zeros_like(u)
        z[2, 0, 0], z[3, 1, 0] = 1.0, 1.0
        return z

    for s in (0.02,):
        sampler = GDDIM(1, grid="uniform", t_min=s, lam=lam)
        sampler.noise_source = source
        out = sampler.sample(model, sde, (4, 1), u_T=u_T, dtype=torch.float64).u[:, :, 0]
        cov = out.T @ out
        target = model.marginal_cov(torch.tensor([s], dtype=torch.float64)).coef[0]
        torch.testing.assert_close(cov, target, rtol=1e-6, atol=1e-9)


def test_blur_deterministic_orders(gaussian_score) -> None:
    """Per-frequency exact flow map sqrt(C_s / C_T) for Gaussian data under blurring."""
    sde = _sde("blur")
    model = gaussian_score(sde, LinearOp.scalar(0.5))
    gen = torch.Generator().manual_seed(0)
    u_T = torch.randn(1, 1, 4, 4, generator=gen, dtype=torch.float64)
    tt = torch.tensor([sde.T, sde.t_min], dtype=torch.float64)
    c = model.marginal_cov(tt)
    flow = LinearOp((c.coef[1:] / c.coef[:1]).sqrt(), c.basis)
    exact = flow.apply(u_T)
    for make, order in ((lambda n: DDIM(n), 1), (lambda n: DEIS(n, order=2), 3)):
        errs = []
        for n in (80, 160):  # blurring is stiff: the asymptotic regime starts late
            out = make(n).sample(model, sde, (1, 1, 4, 4), u_T=u_T, dtype=torch.float64).x
            errs.append((out - exact).abs().max().item())
        slope = np.log2(errs[0] / errs[1])
        assert order - 0.5 < slope < order + 0.6, (errs, slope)


@pytest.mark.slow
def test_cld_orders_against_pf_ode(gaussian_score) -> None:
    """CLD, Gaussian data: convergence to the exact PF-ODE map (DOP853 reference).

    DDIM with the Cholesky factor L_t converges to a *different* flow: its continuous limit
    adds ``L Omega L^T grad log p`` with ``Omega`` skew (``L' - F L`` differs from
    ``1/2 G G^T L^{-T}`` by a rotation), a divergence-free field that keeps every marginal but
    not the PF-ODE paths. So its endpoint error vs the PF-ODE does not vanish while its output
    covariance converges to the exact marginal.
    """
    sde = _sde("cld")
    cov = LinearOp.block(
        torch.tensor([[[0.5, 0.0], [0.0, sde.velocity_variance]]], dtype=torch.float64)
    )
    model = gaussian_score(sde, cov)
    s = 0.05
    u_T = torch.tensor([[[0.8], [-0.4]]], dtype=torch.float64)
    ref = _pf_ode_solve(sde, model, u_T, s)
    cases = {
        "gddim": (lambda n: GDDIM(n, t_min=s), 1.0),
        "gddim_multistep2": (lambda n: GDDIM(n, t_min=s, order=2), 2.8),
        "heun": (lambda n: Heun(n, grid="quadratic", t_min=s), 2.0),
        "dpm_solver3": (
            lambda n: DPMSolver(n, grid="quadratic", t_min=s, order=3, solver_type="heun"),
            3.0,
        ),
        "dpm_solver3_eps": (
            lambda n: DPMSolver(
                n, grid="quadratic", t_min=s, order=3, solver_type="heun", algorithm="dpmsolver"
            ),
            3.0,
        ),
        "unipc2": (
            lambda n: UniPC(n, grid="quadratic", t_min=s, order=2, lower_order_final=False),
            3.0,
        ),
    }
    for name, (make, order) in cases.items():
        errs = []
        for n in (20, 40, 80):
            out = make(n).sample(model, sde, (1, 1), u_T=u_T, dtype=torch.float64).u
            errs.append(np.abs(out.reshape(-1).numpy() - ref).max())
        slope = np.log2(errs[1] / errs[2])
        assert order - 0.4 < slope < order + 0.6, (name, errs, slope)
    # DDIM-L: endpoint stays ~0.5 away from the PF-ODE endpoint; covariance converges.
    c_T = model.marginal_cov(torch.tensor([sde.T], dtype=torch.float64)).coef[0]
    c_s = model.marginal_cov(torch.tensor([s], dtype=torch.float64)).coef[0]
    eye = torch.eye(2, dtype=torch.float64)[:, :, None]  # rows e_x, e_v: (2, 2, 1)
    cov_errs = []
    for n in (20, 40, 80):
        sampler = DDIM(n, t_min=s)
        end = sampler.sample(model, sde, (1, 1), u_T=u_T, dtype=torch.float64).u
        assert np.abs(end.reshape(-1).numpy() - ref).max() > 0.3
        m = sampler.sample(model, sde, (2, 1), u_T=eye, dtype=torch.float64).u[:, :, 0].T
        cov_errs.append((m @ c_T @ m.T - c_s).abs().max().item())
    assert cov_errs[2] < cov_errs[1] < cov_errs[0]
    assert np.log2(cov_errs[1] / cov_errs[2]) > 0.7, cov_errs
