"""Exact-W2 benchmark of the samplers on Gaussian data (no Monte Carlo).

Data ``N(0, diag(lambda))`` with the CIFAR-10 covariance spectrum (shipped with diffkit,
:func:`diffkit.gaussian.cifar10_spectrum`; pixels in [-1, 1]) or the synthetic GRF32
spectrum ``lambda_{c,i,j} = 100 / (1 + i^2 + j^2)^1.5`` (DCT-diagonal, so it also serves the
blurring SDE) [docs/background/samplers.md#exactness]. The score is the exact
linear one. Every sampler used here is linear in the state, so it maps Gaussians to
Gaussians; :func:`diffkit.gaussian.propagate` runs the *real sampler code* on a few deterministic
rows per eigendirection and computes the output law exactly (stochastic multistep samplers:
:func:`propagate_noise_rows`).

W2 to the data law is ``sqrt(sum_i (sqrt(lambda_i) - sqrt(c_i))^2)`` with ``c_i`` the output
variance of the data part (CLD: the position marginal). The predictor-corrector sampler is not
linear (its Langevin step size uses batch norms) and is left out.

Also reproduces the Pierret-Galerne table [PG, 2405.14250, Table 2] for EM, EI, Euler and Heun on
their grid (N grid points = N - 1 uniform steps from T to eps).

diffusers comparison (when diffusers is importable; benchmark-only extra ``bench``): every
multistep scheduler (DPMSolverMultistepScheduler incl. its SDE variant, DEISMultistepScheduler,
UniPCMultistepScheduler) plus DDIM, Euler and Heun, in every configuration of
:func:`diffusers_configs` (orders, sigma transforms, final sigma, spacings, lower-order final
steps, ...), with float64 tables, on their discrete DDPM schedule (1000 betas linear
1e-4..0.02), driven by the exact eps-model of the CIFAR-10-spectrum Gaussian; against diffkit's
samplers and grids (fixed and optimised) on ``VPSDE(schedule="ddpm")`` (DDPM index i is diffkit
time (i + 1) / 1000). With a linear eps-model every scheduler is linear in its start and its
injected noise and acts on each eigendirection separately, so the unchanged scheduler loop run
on unit inputs (one row per noise draw for the stochastic ones) gives the output law exactly
(:func:`scheduler_response`). Configurations that give the same grid and the same step options
run once.

Usage: ``python tools/bench_samplers.py --out DIR [--quick] [--skip-pg] [--skip-optimized]
[--skip-diffusers | --only-diffusers] [--panels vp:cifar10,...] [--max-nfe N]``; writes
``samplers.json``, ``samplers.md`` and ``samplers_w2.png`` to DIR (``--only-diffusers``:
``samplers_diffusers.{json,md}``). ``--quick`` is a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import get_args

import numpy as np
import torch
from torch import Tensor

from diffkit.gaussian import (
    GaussianScore,
    Modes,
    cifar10_spectrum,
    data_cov,
    grf32_spectrum,
    mode_cov,
    propagate,
    w2_to_data,
)
from diffkit.gaussian.spectra import compress
from diffkit.samplers.base import Sampler
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.exponential import Variant as DEISVariant
from diffkit.samplers.exponential_integrator import ExponentialIntegrator
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.heun import Heun
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import point_kernel

# ----------------------------------------------------------------------------- Pierret-Galerne
#: [PG, 2405.14250 v2, Table 2]: (scheme, eps) -> {N: (from N(0, I), from p_T or None)}.
PG_TABLE: dict[tuple[str, float], dict[int, tuple[float, float | None]]] = {
    ("em", 0.0): {50: (4.77, None), 250: (0.65, None), 500: (0.31, None), 1000: (0.16, 0.15)},
    ("em", 1e-5): {50: (4.77, None), 250: (0.65, None), 500: (0.31, None), 1000: (0.16, None)},
    ("em", 1e-3): {50: (4.67, None), 250: (0.69, None), 500: (0.39, None), 1000: (0.27, None)},
    ("em", 1e-2): {50: (4.56, None), 250: (1.69, None), 500: (1.50, None), 1000: (1.42, None)},
    ("ei", 0.0): {50: (2.81, None), 250: (0.57, None), 500: (0.30, None), 1000: (0.16, None)},
    ("ei", 1e-5): {50: (2.81, None), 250: (0.57, None), 500: (0.30, None), 1000: (0.16, None)},
    ("ei", 1e-3): {50: (2.91, None), 250: (0.66, None), 500: (0.41, None), 1000: (0.28, None)},
    ("ei", 1e-2): {50: (3.93, None), 250: (1.76, None), 500: (1.55, None), 1000: (1.45, None)},
    ("euler", 0.0): {50: (1.78, 1.72), 250: (0.44, 0.38), 500: (0.26, 0.19), 1000: (0.17, 0.10)},
    ("euler", 1e-3): {50: (1.78, 1.72), 250: (0.48, 0.42), 500: (0.32, 0.27), 1000: (0.25, 0.21)},
    ("euler", 1e-2): {50: (2.25, 2.21), 250: (1.43, 1.41), 500: (1.38, 1.37), 1000: (1.37, 1.36)},
    ("heun", 0.0): {50: (7.09, None), 250: (0.73, 0.72), 500: (0.22, 0.21), 1000: (0.09, 0.05)},
    ("heun", 1e-5): {50: (6.48, None), 250: (0.65, 0.64), 500: (0.20, 0.18), 1000: (0.09, 0.05)},
    ("heun", 1e-3): {50: (0.57, 0.56), 250: (0.15, 0.13), 500: (0.18, 0.16), 1000: (0.19, 0.17)},
    ("heun", 1e-2): {50: (1.38, 1.37), 250: (1.36, 1.35), 500: (1.36, 1.35), 1000: (1.36, 1.35)},
}


def pg_sampler(scheme: str, n_points: int, eps: float) -> Sampler:
    """PG's grid: N points, N - 1 uniform steps from T down to eps
    (docs/background/samplers.md#pierret-galerne)."""
    kw = {"grid": "uniform", "t_min": eps}
    if scheme == "em":
        return EulerMaruyama(n_points - 1, lam=1.0, **kw)
    if scheme == "euler":
        return EulerMaruyama(n_points - 1, lam=0.0, **kw)
    if scheme == "ei":
        return ExponentialIntegrator(n_points - 1, lam=1.0, **kw)
    return Heun(n_points - 1, correct_at_zero=True, **kw)


def reproduce_pg(lam: Tensor) -> list[dict]:
    from diffkit.sdes.vp import VPSDE

    torch.set_num_threads(1)
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    modes = Modes(sde, (lam.numel(),))
    cov = data_cov(sde, lam.reshape(-1))
    model = GaussianScore(sde, cov)
    c_T = mode_cov(point_kernel(sde, torch.ones(1)).cov, modes) + sde.alpha(1.0) ** 2 * lam.reshape(
        -1, 1, 1
    )
    starts = {"N(0,I)": torch.ones(modes.n, 1, 1, dtype=torch.float64), "p_T": c_T}
    rows = []
    for (scheme, eps), cells in PG_TABLE.items():
        for n_points, published in cells.items():
            for j, (start, c0) in enumerate(starts.items()):
                ref = published[j] if j == 0 else (published[1] or published[0])
                out, nfe = propagate(pg_sampler(scheme, n_points, eps), sde, model, c0, modes)
                w2 = float(w2_to_data(lam, out))
                rows.append(
                    {
                        "scheme": scheme,
                        "eps": eps,
                        "grid_points": n_points,
                        "start": start,
                        "nfe": nfe,
                        "w2": w2,
                        "published": ref,
                        "abs_diff": abs(w2 - ref),
                    }
                )
    return rows


# ----------------------------------------------------------------------------- multistep noise
def propagate_noise_rows(
    sampler: Sampler, sde: LinearSDE, model, start_cov: Tensor, modes: Modes
) -> tuple[Tensor, int]:
    """Exact output covariance ``(modes, k, k)`` of a stochastic sampler whose steps may reuse
    earlier model outputs (SDE-DPM-Solver++ 2M/3M), started at ``N(0, start_cov)``.

    :func:`diffkit.gaussian.propagate` resets the state after each step, which is exact only for
    one-step samplers (a multistep sampler keeps the history it computed from the un-reset
    state). Here nothing is reset: the batch holds ``k`` rows started at the unit vectors with
    no noise, and for each noise draw ``j`` another ``k`` rows started at 0 that receive the unit
    vectors as that draw (``noise_source``) and zero noise otherwise. The sampler is linear in
    the start and the noise, per eigendirection, so the outputs are the responses ``M`` (start)
    and ``B_j`` (draw ``j``) and ``C = M C_0 M^T + sum_j B_j B_j^T``.
    """
    k = modes.k
    draws = sampler.expected_nfe(sde) + 1  # at most one draw per step
    unit = modes.unit_rows()
    blocks = [unit] + [torch.zeros_like(unit)] * draws
    u_T = modes.from_modes(torch.cat(blocks))
    calls = [0]

    def noise(u: Tensor) -> Tensor:
        j = calls[0] = calls[0] + 1
        if j > draws:
            raise RuntimeError("propagate_noise_rows: more noise draws than steps")
        z = [torch.zeros_like(unit)] * (1 + draws)
        z[j] = unit
        return modes.from_modes(torch.cat(z))

    sampler.noise_source = noise
    try:
        res = sampler.sample(
            model, sde, (k * (1 + draws), *modes.data_shape), u_T=u_T, dtype=torch.float64
        )
    finally:
        sampler.noise_source = None
    m = modes.to_modes(res.u)  # (rows, modes, k)
    m = m.reshape(1 + draws, k, modes.n, k).permute(0, 2, 3, 1)  # (block, modes, k_out, k_in)
    cov = m[0] @ start_cov @ m[0].mT + (m[1:] @ m[1:].mT).sum(0)
    return cov, res.nfe


def propagate_any(
    sampler: Sampler, sde: LinearSDE, model, start_cov: Tensor, modes: Modes
) -> tuple[Tensor, int]:
    """:func:`propagate_noise_rows` for stochastic multistep samplers, else
    :func:`diffkit.gaussian.propagate`."""
    if sampler.stochastic and getattr(sampler, "order", 1) > 1 and isinstance(sampler, DPMSolver):
        return propagate_noise_rows(sampler, sde, model, start_cov, modes)
    return propagate(sampler, sde, model, start_cov, modes)


# ----------------------------------------------------------------------------- main benchmark
def make_sdes() -> dict[str, Callable[[], LinearSDE]]:
    from diffkit.sdes.vp import VPSDE

    out: dict[str, Callable[[], LinearSDE]] = {"vp": VPSDE}
    try:
        from diffkit.sdes.ve import VESDE

        out["ve"] = VESDE
    except ImportError:
        pass
    try:
        from diffkit.sdes.cld import CLDSDE

        out["cld"] = CLDSDE
    except ImportError:
        pass
    try:
        from diffkit.sdes.blur import BlurSDE

        out["blur"] = lambda: BlurSDE(image_size=(32, 32))
    except ImportError:
        pass
    return out


class Spec:
    """A sampler configuration of the benchmark: ``cls(steps, grid=..., **options)``, with its
    labels and NFE per step."""

    def __init__(
        self, cls: type[Sampler], options: dict, variant: str, order: int, per_step: int
    ) -> None:
        self.cls, self.options, self.variant = cls, options, variant
        self.order, self.per_step = order, per_step

    def make(
        self, steps: int, grid: str, t_min: float | None = None, denoise_final: bool = False
    ) -> Sampler:
        extra = {} if t_min is None else {"t_min": t_min}
        if denoise_final:
            extra["denoise_final"] = True
        return self.cls(steps, grid=grid, **self.options, **extra)


SDE_DPM = "sde-dpmsolver++"

SAMPLERS: dict[str, Spec] = {
    "euler_maruyama": Spec(EulerMaruyama, {"lam": 1.0}, "lam=1", 1, 1),
    "euler_ode": Spec(EulerMaruyama, {"lam": 0.0}, "lam=0", 1, 1),
    "ei": Spec(ExponentialIntegrator, {"lam": 1.0}, "lam=1", 1, 1),
    "heun": Spec(Heun, {}, "pf-ode", 2, 2),
    "ddim": Spec(DDIM, {}, "eta=0", 1, 1),
    "ddim_eta1": Spec(DDIM, {"eta": 1.0}, "eta=1", 1, 1),
    "deis_tab1": Spec(DEIS, {"order": 1}, "tab", 1, 1),
    "deis_tab2": Spec(DEIS, {"order": 2}, "tab", 2, 1),
    "deis_tab3": Spec(DEIS, {"order": 3}, "tab", 3, 1),
    "deis_rhoab2": Spec(DEIS, {"order": 2, "variant": "rhoab"}, "rhoab", 2, 1),
    "gddim": Spec(GDDIM, {}, "lam=0", 0, 1),
    "gddim_ms2": Spec(GDDIM, {"order": 2}, "lam=0", 2, 1),
    "gddim_lam1": Spec(GDDIM, {"lam": 1.0}, "lam=1", 0, 1),
    "dpm_solver1": Spec(DPMSolver, {"order": 1}, "dpmsolver++", 1, 1),
    "dpm_solver2": Spec(DPMSolver, {"order": 2}, "dpmsolver++ midpoint", 2, 1),
    "dpm_solver2_heun": Spec(
        DPMSolver, {"order": 2, "solver_type": "heun"}, "dpmsolver++ heun", 2, 1
    ),
    "dpm_solver3": Spec(DPMSolver, {"order": 3}, "dpmsolver++ midpoint", 3, 1),
    "dpm_solver3_heun": Spec(
        DPMSolver, {"order": 3, "solver_type": "heun"}, "dpmsolver++ heun", 3, 1
    ),
    "sde_dpm_solver1": Spec(DPMSolver, {"order": 1, "algorithm": SDE_DPM}, SDE_DPM, 1, 1),
    "sde_dpm_solver2": Spec(DPMSolver, {"order": 2, "algorithm": SDE_DPM}, SDE_DPM, 2, 1),
    "sde_dpm_solver3": Spec(DPMSolver, {"order": 3, "algorithm": SDE_DPM}, SDE_DPM, 3, 1),
    **{
        f"unipc{k}_{bh}": Spec(UniPC, {"order": k, "solver_type": bh}, bh, k, 1)
        for k in (1, 2, 3)
        for bh in ("bh1", "bh2")
    },
    "unipc2_bh2_nocorr": Spec(UniPC, {"order": 2, "corrector": False}, "bh2 UniP only", 2, 1),
    **{
        f"unipc3_{bh}_nolof": Spec(
            UniPC, {"order": 3, "solver_type": bh, "lower_order_final": False}, bh, 3, 1
        )
        for bh in ("bh1", "bh2")
    },
    **{
        f"dpm_solver_eps{k}": Spec(DPMSolver, {"order": k, "algorithm": "dpmsolver"}, "eps", k, 1)
        for k in (1, 2, 3)
    },
    **{
        f"unipc{k}_{bh}_eps": Spec(
            UniPC, {"order": k, "solver_type": bh, "predict_x0": False}, f"{bh} eps", k, 1
        )
        for k in (1, 2, 3)
        for bh in ("bh1", "bh2")
    },
    **{
        f"unipc3_{bh}_eps_nolof": Spec(
            UniPC,
            {"order": 3, "solver_type": bh, "predict_x0": False, "lower_order_final": False},
            f"{bh} eps",
            3,
            1,
        )
        for bh in ("bh1", "bh2")
    },
    **(
        {
            f"deis_logrho{k}": Spec(DEIS, {"order": k, "variant": "logrho"}, "logrho", k, 1)
            for k in (1, 2, 3)
        }
        if "logrho" in get_args(DEISVariant)
        else {}
    ),
}

#: samplers that differ from another one only by name on 1x1-block SDEs (gDDIM = DDIM there).
SCALAR_DUPLICATES = {"gddim", "gddim_lam1"}


def spectra(sde_name: str) -> dict[str, tuple[Tensor, Tensor]]:
    """Data name -> (eigenvalues in the shape the SDE sees, multiplicity of each entry).

    Scalar and CLD SDEs act identically on equal eigenvalues, so GRF32's 3072 eigenvalues are
    reduced to the distinct ones with multiplicities; blurring sees one 32x32 channel (the three
    channels are identical) with multiplicity 3. W2 uses the multiplicities as weights.
    """
    grf = grf32_spectrum()
    if sde_name == "blur":
        return {"grf32": (grf[:1], torch.full((1, 32, 32), 3.0, dtype=torch.float64))}
    cifar = cifar10_spectrum()
    uniq, counts = compress(grf)
    return {
        "cifar10": (cifar, torch.ones_like(cifar)),
        "grf32": (uniq, counts),
    }


def run_job(
    sde_name: str, data_name: str, grid: str, nfes: list[int], samplers: list[str]
) -> list[dict]:
    """The given samplers x NFEs for one (SDE, data, grid); samplers undefined for the SDE
    (refused at plan time with the reason) are reported and left out."""
    torch.set_num_threads(1)
    sde = make_sdes()[sde_name]()
    lam, weights = spectra(sde_name)[data_name]
    modes = Modes(sde, tuple(lam.shape))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = mode_cov(sde.prior_cov(), modes)
    rows = []
    for name in samplers:
        spec = SAMPLERS[name]
        if sde.block == 1 and name in SCALAR_DUPLICATES:
            continue
        try:
            spec.make(1, grid).check_sde(sde)
        except ValueError as err:
            print(f"  {sde_name}/{name}: left out ({err})", flush=True)
            continue
        for nfe in nfes:
            steps = max(nfe // spec.per_step, 1)
            sampler = spec.make(steps, grid)
            t0 = time.perf_counter()
            try:
                out, used = propagate_any(sampler, sde, model, start, modes)
                w2 = float(w2_to_data(lam, out, weights))
            except (ValueError, RuntimeError) as err:  # report, keep going
                used, w2 = -1, float("nan")
                print(f"  {sde_name}/{name}/{grid}/{nfe}: {err}", flush=True)
            rows.append(
                {
                    "data": data_name,
                    "sde": sde_name,
                    "sampler": name,
                    "variant": spec.variant,
                    "order": spec.order,
                    "grid": grid,
                    "t_min": sde.t_min,
                    "steps": steps,
                    "nfe_budget": nfe,
                    "nfe": used,
                    "w2": w2,
                    "seconds": time.perf_counter() - t0,
                }
            )
    print(f"{data_name:8s} {sde_name:5s} {grid:9s} {len(samplers)} samplers done", flush=True)
    return rows


# ----------------------------------------------------------------------------- optimised grids
#: Samplers whose grid is optimised per NFE (the best families on the fixed grids).
OPT_SAMPLERS = ["deis_logrho3", "dpm_solver3", "unipc3_bh1"]
OPT_NFES = [5, 10, 20]


def optimized_row(
    name: str, nfe: int, sde: LinearSDE, lam: Tensor, data: str, sde_name: str
) -> dict:
    """One sampler's grid optimised for the exact W2 (``diffkit.gaussian.optimize_grid``, from
    the Karras grid, else from log_snr when a trial grid degenerates), and the W2 of that grid
    from an independent propagation (``w2``; the optimiser's own value is ``w2_optimizer``)."""
    from diffkit.gaussian.grid_optimization import optimize_grid

    spec = SAMPLERS[name]
    t0 = time.perf_counter()
    res, init = None, None
    for init in ("karras", "log_snr"):
        try:
            res = optimize_grid(spec.make(nfe, init, 1e-3), sde, lam, init=init, iterations=40)
            break
        except (ValueError, RuntimeError) as err:
            print(f"  optimize {sde_name}/{name}/{nfe} from {init}: {err}", flush=True)
    row = {
        "data": data,
        "sde": sde_name,
        "sampler": name,
        "label": name,
        "variant": spec.variant,
        "order": spec.order,
        "grid": "optimized",
        "t_min": 1e-3,
        "steps": nfe,
        "nfe_budget": nfe,
        "nfe": -1,
        "w2": float("nan"),
    }
    if res is not None:
        modes = Modes(sde, (lam.numel(),))
        model = GaussianScore(sde, data_cov(sde, lam))
        start = torch.ones(modes.n, 1, 1, dtype=torch.float64)
        sampler = spec.make(nfe, res.times.tolist(), 1e-3)
        out, used = propagate_any(sampler, sde, model, start, modes)
        row.update(
            nfe=used,
            w2=float(w2_to_data(lam, out)),
            w2_optimizer=res.value,
            w2_initial=res.initial_value,
            grid_init=init,
            iterations=res.iterations,
            times=res.times.tolist(),
        )
    row["seconds"] = time.perf_counter() - t0
    return row


def run_optimized_job(sde_name: str, name: str, nfes: list[int]) -> list[dict]:
    """Optimised grids for one sampler on Song's VP (``vp``) or DDPM's schedule (``vp_ddpm``),
    CIFAR-10 spectrum, start N(0, I), t_min 1e-3."""
    from diffkit.sdes.vp import VPSDE

    torch.set_num_threads(1)
    lam = cifar10_spectrum()
    if sde_name == "vp":
        sde, data = VPSDE(beta_min=0.1, beta_max=20.0), "cifar10"
    else:
        sde, data = VPSDE(beta_min=0.1, beta_max=20.0, schedule="ddpm", t_min=1e-3), "cifar10_ddpm"
    rows = [optimized_row(name, n, sde, lam, data, sde_name) for n in nfes]
    print(f"optimized grids {sde_name}/{name} done", flush=True)
    return rows


# ----------------------------------------------------------------------------- diffusers
#: NFE budgets of the diffusers comparison.
DDPM_NFES = [5, 10, 20, 50, 100]

#: Options that only ``set_timesteps`` reads (they pick the grid); the sweep runs one grid once.
GRID_KEYS = (
    "timestep_spacing",
    "steps_offset",
    "use_karras_sigmas",
    "use_exponential_sigmas",
    "use_beta_sigmas",
    "use_lu_lambdas",
    "interpolation_type",
)
SPACINGS = ("linspace", "leading", "trailing")
SIGMA_KINDS = {
    "default": {},
    "karras": {"use_karras_sigmas": True},
    "exponential": {"use_exponential_sigmas": True},
    "beta": {"use_beta_sigmas": True},
    "lu": {"use_lu_lambdas": True},
}
#: Corrector off in every step of UniPC (``disable_corrector`` lists step indices).
ALL_STEPS = list(range(1000))


def _product(**axes: list) -> list[dict]:
    out = [{}]
    for key, values in axes.items():
        out = [{**d, key: v} for d in out for v in values]
    return out


def _grid_options(sigma_kinds: list[str], finals: list[str | None], interp: bool = False) -> list:
    """Grid settings: every spacing with the table sigmas (leading also with ``steps_offset=1``,
    as Stable Diffusion ships it) and every sigma transform, times the final sigma types."""
    grids = [{"timestep_spacing": s} for s in SPACINGS]
    grids.append({"timestep_spacing": "leading", "steps_offset": 1})
    grids += [SIGMA_KINDS[k] for k in sigma_kinds if k != "default"]
    if interp:
        grids = [{**g, "interpolation_type": i} for g in grids for i in ("linear", "log_linear")]
    return [{**g, "final_sigmas_type": f} if f else g for g in grids for f in finals]


def diffusers_configs(quick: bool = False) -> list[tuple[str, dict, float]]:
    """Every configuration of each scheduler: ``(class name, config, DDIM eta)``.

    Left out, by design: ``thresholding`` / ``clip_sample`` (they clip x0 to a pixel range;
    nonlinear and meant for images in [-1, 1]), ``prediction_type`` (the exact model can be
    written in any parameterisation; the schedulers convert it to the same x0 / eps),
    ``rescale_betas_zero_snr`` and ``use_flow_sigmas`` / dynamic shifting (they change the
    noise schedule the model was trained on), Euler's ``timestep_type="continuous"`` (a
    timestep meant for sigma-conditioned networks, not DDPM indices), Euler's churn
    (``s_churn``: its noise comes from an internal generator and cannot be injected), UniPC's
    ``solver_p`` (another scheduler as predictor) and ``lambda_min_clipped`` (a no-op on the
    linear schedule: its log-SNR never reaches the default clip). To keep the sweep within a
    few CPU minutes, also DPM-Solver's ``sde-dpmsolver`` (deprecated by diffusers; the
    noise-prediction SDE variant, whose exact propagation costs one batch row per step) and
    UniPC's ``predict_x0=False`` (the noise-prediction form; data prediction is its default).
    """
    sig4 = ["default", "karras", "exponential", "beta"]
    out: list[tuple[str, dict, float]] = []
    if quick:
        return [
            ("DDIMScheduler", {"timestep_spacing": "trailing", "set_alpha_to_one": True}, 0.0),
            ("DDIMScheduler", {"timestep_spacing": "trailing", "set_alpha_to_one": True}, 1.0),
            ("DPMSolverMultistepScheduler", {"solver_order": 2, "use_karras_sigmas": True}, 0.0),
            (
                "DPMSolverMultistepScheduler",
                {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
                0.0,
            ),
            ("DEISMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}, 0.0),
            ("UniPCMultistepScheduler", {"solver_order": 3, "final_sigmas_type": "sigma_min"}, 0.0),
            ("UniPCMultistepScheduler", {"disable_corrector": ALL_STEPS}, 0.0),
            ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, 0.0),
            ("HeunDiscreteScheduler", {"use_karras_sigmas": True}, 0.0),
        ]
    for grid in _grid_options([*sig4, "lu"], ["zero", "sigma_min"]):
        solver = _product(
            algorithm_type=["dpmsolver++", "dpmsolver", "sde-dpmsolver++"],
            solver_order=[1, 2, 3],
            solver_type=["midpoint", "heun"],
            lower_order_final=[True, False],
            euler_at_final=[False, True],
        )
        out += [("DPMSolverMultistepScheduler", {**grid, **s}, 0.0) for s in solver]
    for grid in _grid_options(sig4, [None]):
        solver = _product(solver_order=[1, 2, 3], lower_order_final=[True, False])
        out += [("DEISMultistepScheduler", {**grid, **s}, 0.0) for s in solver]
    for grid in _grid_options(sig4, ["zero", "sigma_min"]):
        solver = _product(
            solver_order=[1, 2, 3],
            solver_type=["bh1", "bh2"],
            disable_corrector=[[], ALL_STEPS],
            lower_order_final=[True, False],
        )
        out += [("UniPCMultistepScheduler", {**grid, **s}, 0.0) for s in solver]
    for grid in _grid_options(["default"], [None]):
        for alpha_one in (True, False):
            for eta in (0.0, 1.0):
                out.append(("DDIMScheduler", {**grid, "set_alpha_to_one": alpha_one}, eta))
    for grid in _grid_options(sig4, ["zero", "sigma_min"], interp=True):
        out.append(("EulerDiscreteScheduler", grid, 0.0))
    for grid in _grid_options(sig4, [None]):
        out.append(("HeunDiscreteScheduler", grid, 0.0))
    return out


def ddpm_alpha_bar() -> Tensor:
    """DDPM's discrete ``alpha_bar_i``, i = 0..999 (betas linear 1e-4..0.02), float64."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


class DiffusersEpsModel:
    """Exact eps-model of ``N(0, diag lam)`` for a diffusers scheduler.

    ``eps(x, t) = sqrt(1 - ab) x / (ab lam + 1 - ab)`` with ``x`` the VP-scaled model input
    (what ``scale_model_input`` returns) and ``ab = 1 / (1 + sigma(t)^2)``, where ``log
    sigma(t)`` interpolates ``log sqrt((1 - ab_i) / ab_i)`` linearly in ``t``: exact at integer
    timesteps, and the inverse of diffusers' own ``_sigma_to_t`` at fractional ones (so a
    scheduler that passes an unrounded timestep gets the eps of exactly its sigma).
    """

    def __init__(self, lam: Tensor) -> None:
        ab = ddpm_alpha_bar()
        self.lam = lam.reshape(-1)
        self.log_sigmas = (0.5 * ((1 - ab) / ab).log()).numpy()
        self.calls = 0

    def __call__(self, x: Tensor, t) -> Tensor:
        self.calls += 1
        sig = math.exp(float(np.interp(float(t), np.arange(1000), self.log_sigmas)))
        ab = 1.0 / (1.0 + sig**2)
        return math.sqrt(1 - ab) * x.to(torch.float64) / (ab * self.lam + 1 - ab)


def make_scheduler(cls_name: str, config: dict, steps: int, float64: bool = True):
    """A diffusers scheduler on DDPM's schedule with ``set_timesteps(steps)`` done.

    ``float64``: its tables (betas, alpha-bar, alpha_t, sigma_t, lambda_t, final alpha) are
    replaced by float64 ones before ``set_timesteps`` and its sigma table is cast to float64
    after, so every coefficient is computed in float64 from the grid (whose values
    ``set_timesteps`` rounds to float32). ``DPMSolverMultistepScheduler`` and
    ``EulerDiscreteScheduler`` cast the sample to float32 inside ``step`` (not configurable).
    """
    import diffusers

    cfg = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    cfg["beta_schedule"] = "linear"
    if cls_name in ("DDIMScheduler", "HeunDiscreteScheduler"):
        cfg["clip_sample"] = False
    sched = getattr(diffusers, cls_name)(**cfg, **config)
    if float64:
        ab = ddpm_alpha_bar()
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
        sched.betas, sched.alphas, sched.alphas_cumprod = betas, 1 - betas, ab
        if hasattr(sched, "alpha_t"):
            sched.alpha_t, sched.sigma_t = ab.sqrt(), (1 - ab).sqrt()
            sched.lambda_t = sched.alpha_t.log() - sched.sigma_t.log()
        if hasattr(sched, "final_alpha_cumprod"):
            one = torch.tensor(1.0, dtype=torch.float64)
            sched.final_alpha_cumprod = one if sched.config.set_alpha_to_one else ab[0]
    sched.set_timesteps(steps)
    if float64 and isinstance(getattr(sched, "sigmas", None), Tensor):
        sched.sigmas = sched.sigmas.to(torch.float64)
    return sched


def is_stochastic(sched, eta: float = 0.0) -> bool:
    """Whether a diffusers loop draws noise (SDE-DPM-Solver variants, DDIM with eta > 0)."""
    return eta > 0 or str(getattr(sched.config, "algorithm_type", "")).startswith("sde")


def scheduler_response(sched, lam: Tensor, eta: float = 0.0) -> tuple[Tensor, int]:
    """Unit responses ``(rows, modes)`` of a diffusers sampling loop on ``N(0, diag lam)``, and
    its model calls.

    With the linear eps-model every scheduler is linear in the sample and in the injected noise
    and acts on each eigendirection separately (scalar coefficients), also across its multistep
    history. Row 0 starts at ``init_noise_sigma`` (the start N(0, I) in VP scale, one standard
    deviation) with no noise; for a stochastic loop, row ``k + 1`` starts at 0 and receives unit
    noise (``variance_noise``) at step ``k`` only. The loop's output for a start
    ``init_noise_sigma g`` and noises ``z_k`` is ``g * row_0 + sum_k z_k * row_{k+1}``.
    """
    stochastic = is_stochastic(sched, eta)
    rows = 1 + len(sched.timesteps) if stochastic else 1
    x = torch.zeros(rows, lam.numel(), dtype=torch.float64)
    x[0] = float(sched.init_noise_sigma)
    model = DiffusersEpsModel(lam)
    kwargs: dict = {"eta": eta} if eta > 0 else {}
    for k, t in enumerate(sched.timesteps):
        if stochastic:
            z = torch.zeros_like(x)
            if k + 1 < rows:
                z[k + 1] = 1.0
            kwargs["variance_noise"] = z
        eps = model(sched.scale_model_input(x, t), t)
        x = sched.step(eps, t, x, **kwargs).prev_sample.to(torch.float64)
    return x, model.calls


def scheduler_variance(sched, lam: Tensor, eta: float = 0.0) -> tuple[Tensor, int]:
    """Exact output variance ``(modes,)`` of the loop started at N(0, I) (independent unit
    inputs: the sum of the squared responses), and its model calls."""
    rows, calls = scheduler_response(sched, lam, eta)
    return (rows**2).sum(0), calls


def _grid_fingerprint(cls_name: str, config: dict, steps: int) -> tuple | None:
    """What ``set_timesteps`` produced for the grid options in ``config`` (None: unsupported)."""
    grid_cfg = {k: v for k, v in config.items() if k in (*GRID_KEYS, "final_sigmas_type")}
    try:
        sched = make_scheduler(cls_name, grid_cfg, steps)
    except (ValueError, NotImplementedError):
        return None
    sigmas = getattr(sched, "sigmas", None)
    return (
        tuple(sched.timesteps.tolist()),
        tuple(sigmas.tolist()) if isinstance(sigmas, Tensor) else None,
        float(sched.init_noise_sigma),
    )


_ACCEPTED: dict[tuple, bool] = {}


def _accepted(cls_name: str, config: dict) -> bool:
    """Whether diffusers' constructor accepts ``config`` (e.g. DPM-Solver's noise-prediction
    algorithms refuse a zero final sigma)."""
    import diffusers

    key = (cls_name, repr(sorted(config.items())))
    if key not in _ACCEPTED:
        try:
            getattr(diffusers, cls_name)(**config)
            _ACCEPTED[key] = True
        except (ValueError, NotImplementedError):
            _ACCEPTED[key] = False
    return _ACCEPTED[key]


def canonical_solver_options(cls_name: str, config: dict, steps: int) -> tuple:
    """The options ``step`` reads, with those that cannot act at this step count set to one
    value (read from diffusers' ``step``): ``lower_order_final`` only acts below 15 steps
    (DPM-Solver, DEIS); ``euler_at_final`` only when the final sigma is not zero (DPM-Solver,
    whose last step is first order with a zero final sigma anyway); order-1 DPM-Solver reads
    neither ``solver_type`` nor ``lower_order_final`` nor ``euler_at_final``."""
    c = {k: v for k, v in config.items() if k not in GRID_KEYS}
    if cls_name in ("DPMSolverMultistepScheduler", "DEISMultistepScheduler") and steps >= 15:
        c["lower_order_final"] = True
    if cls_name == "DPMSolverMultistepScheduler":
        if c.get("final_sigmas_type", "zero") == "zero":
            c["euler_at_final"] = False
        if c.get("solver_order", 2) == 1:
            c.update(solver_type="midpoint", lower_order_final=True, euler_at_final=False)
    if "disable_corrector" in c:
        c["disable_corrector"] = "all" if c["disable_corrector"] else "none"
    return tuple(sorted(c.items()))


def describe_config(cls_name: str, config: dict, eta: float) -> tuple[str, str, int]:
    """``(variant, grid, order)`` labels of one configuration for the tables."""
    grid = next((k for k, v in SIGMA_KINDS.items() if v and all(config.get(n) for n in v)), None)
    if grid is None:
        grid = config.get("timestep_spacing", "linspace")
        if config.get("steps_offset"):
            grid += "+1"
    if "interpolation_type" in config:
        grid += f" {config['interpolation_type']}"
    if "final_sigmas_type" in config:
        grid += f", final {config['final_sigmas_type']}"
    parts = []
    for key in ("algorithm_type", "solver_type", "predict_x0"):
        if key in config:
            parts.append(f"{key}={config[key]}")
    if "disable_corrector" in config:
        parts.append("corrector=" + ("off" if config["disable_corrector"] else "on"))
    for key in ("lower_order_final", "euler_at_final", "set_alpha_to_one"):
        if key in config:
            parts.append(f"{key}={config[key]}")
    if cls_name == "DDIMScheduler":
        parts.append(f"eta={eta:g}")
    order = int(config.get("solver_order", 2 if cls_name == "HeunDiscreteScheduler" else 1))
    if cls_name in (
        "DPMSolverMultistepScheduler",
        "DEISMultistepScheduler",
        "UniPCMultistepScheduler",
    ):
        order = int(config.get("solver_order", 2))
    return " ".join(parts) or "default", grid, order


def diffusers_steps(cls_name: str, nfe: int) -> int:
    """Steps within an NFE budget (Heun: ``2 steps - 1`` calls)."""
    return (nfe + 1) // 2 if cls_name == "HeunDiscreteScheduler" else nfe


def plan_diffusers_sweep(
    nfes: list[int], quick: bool
) -> tuple[list[tuple[str, dict, float, int]], dict[str, int]]:
    """Distinct runs of the sweep: ``(class, config, eta, nfe)`` once per behaviour (same grid
    from ``set_timesteps``, same options read by ``step``), and counts of configurations."""
    runs, seen = [], {}
    counts = {"configurations": 0, "unsupported": 0, "distinct_runs": 0}
    grids: dict[tuple, tuple | None] = {}
    for cls_name, config, eta in diffusers_configs(quick):
        for nfe in nfes:
            counts["configurations"] += 1
            steps = diffusers_steps(cls_name, nfe)
            gkey = (
                cls_name,
                steps,
                tuple(
                    sorted(
                        (k, v) for k, v in config.items() if k in (*GRID_KEYS, "final_sigmas_type")
                    )
                ),
            )
            if gkey not in grids:
                grids[gkey] = _grid_fingerprint(cls_name, config, steps)
            if grids[gkey] is None or not _accepted(cls_name, config):
                counts["unsupported"] += 1
                continue
            key = (
                cls_name,
                eta,
                nfe,
                grids[gkey],
                canonical_solver_options(cls_name, config, steps),
            )
            if key in seen:
                runs[seen[key]][4] += 1
                continue
            seen[key] = len(runs)
            runs.append([cls_name, config, eta, nfe, 1])
    counts["distinct_runs"] = len(runs)
    return [tuple(r) for r in runs], counts


def run_diffusers_chunk(runs: list[tuple], lam: Tensor | None = None) -> list[dict]:
    """Rows of a list of ``(class, config, eta, nfe, equivalent configurations)`` runs."""
    torch.set_num_threads(1)
    lam = cifar10_spectrum() if lam is None else lam
    rows = []
    for cls_name, config, eta, nfe, same in runs:
        t0 = time.perf_counter()
        steps = diffusers_steps(cls_name, nfe)
        try:
            sched = make_scheduler(cls_name, config, steps)
            var, calls = scheduler_variance(sched, lam, eta)
            w2 = float(w2_to_data(lam, var.reshape(-1, 1, 1)))
        except Exception as err:  # a configuration diffusers fails on counts as a failure
            calls, w2 = -1, float("nan")
            error = f"{type(err).__name__}: {err}"
            print(f"  diffusers {cls_name} {nfe}: {error}", flush=True)
        else:
            error = None
        variant, grid, order = describe_config(cls_name, config, eta)
        cfg = {k: ("all steps" if v == ALL_STEPS else v) for k, v in config.items()}
        rows.append(
            {
                "data": "cifar10_ddpm",
                "sde": "vp_ddpm",
                "sampler": f"diffusers:{cls_name}",
                "label": cls_name.removesuffix("Scheduler"),
                "variant": variant,
                "order": order,
                "grid": grid,
                "t_min": 0.0,
                "steps": steps,
                "nfe_budget": nfe,
                "nfe": calls,
                "w2": w2,
                "config": cfg,
                "eta": eta,
                "equivalent_configs": same,
                "error": error,
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


#: diffkit grids on the DDPM schedule: (grid, t_min, denoise_final). t_min = 0 ends at
#: alpha_bar = 1 like diffusers' final step to sigma 0 (the uniform grid is then exactly
#: diffusers' trailing grid); grids spaced in the noise level need t_min > 0 and stop at DDPM
#: index 0 (t = 1e-3), with or without a final Tweedie denoising step (one more NFE).
DDPM_GRIDS: list[tuple[str, float, bool]] = [
    ("uniform", 0.0, False),
    ("quadratic", 0.0, False),
    ("uniform", 1e-3, True),
    ("quadratic", 1e-3, True),
    ("log_snr", 1e-3, False),
    ("log_snr", 1e-3, True),
    ("karras", 1e-3, False),
    ("karras", 1e-3, True),
]


def steps_for_budget(spec: Spec, nfe: int, grid: str, t_min: float, denoise: bool, sde) -> int:
    """The most steps whose NFE (``expected_nfe``) fits the budget (at least 1)."""
    steps = max(nfe - int(denoise), 1)
    while steps > 1 and spec.make(steps, grid, t_min, denoise).expected_nfe(sde) > nfe:
        steps -= 1
    return steps


def run_ddpm_diffkit_job(
    grid: str, t_min: float, denoise: bool, nfes: list[int], samplers: list[str]
) -> list[dict]:
    """diffkit's samplers on ``VPSDE(schedule="ddpm")`` (DDPM index i is time (i + 1) / 1000),
    CIFAR-10 spectrum, start N(0, I): one grid setting, every sampler and NFE budget."""
    from diffkit.sdes.vp import VPSDE

    torch.set_num_threads(1)
    lam = cifar10_spectrum()
    sde = VPSDE(beta_min=0.1, beta_max=20.0, schedule="ddpm", t_min=t_min)
    modes = Modes(sde, (lam.numel(),))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = torch.ones(modes.n, 1, 1, dtype=torch.float64)
    rows = []
    for name in samplers:
        spec = SAMPLERS[name]
        if name in SCALAR_DUPLICATES:
            continue
        for nfe in nfes:
            t0 = time.perf_counter()
            try:
                steps = steps_for_budget(spec, nfe, grid, t_min, denoise, sde)
                sampler = spec.make(steps, grid, t_min, denoise)
                out, used = propagate_any(sampler, sde, model, start, modes)
                w2 = float(w2_to_data(lam, out))
            except (ValueError, RuntimeError) as err:
                steps, used, w2 = 0, -1, float("nan")
                print(f"  ddpm {name}/{grid}/{nfe}: {err}", flush=True)
            rows.append(
                {
                    "data": "cifar10_ddpm",
                    "sde": "vp_ddpm",
                    "sampler": name,
                    "label": name,
                    "variant": spec.variant,
                    "order": spec.order,
                    "grid": grid + (" +denoise" if denoise else ""),
                    "t_min": t_min,
                    "steps": steps,
                    "nfe_budget": nfe,
                    "nfe": used,
                    "w2": w2,
                    "seconds": time.perf_counter() - t0,
                }
            )
    print(f"cifar10_ddpm diffkit {grid} t_min={t_min} denoise={denoise} done", flush=True)
    return rows


def _best(rows: list[dict], nfe: int, keep: Callable[[dict], bool]) -> dict | None:
    cand = [r for r in rows if r["nfe_budget"] == nfe and keep(r) and math.isfinite(r["w2"])]
    cand = [r for r in cand if 0 < r["nfe"] <= nfe]
    return min(cand, key=lambda r: r["w2"]) if cand else None


def _is_diffusers(r: dict) -> bool:
    return r["sampler"].startswith("diffusers:")


def diffusers_family(r: dict) -> str:
    """Scheduler family of a diffusers row (DPM-Solver split by algorithm, DDIM by eta)."""
    label = r["label"]
    if "algorithm_type" in r.get("config", {}):
        label += " " + r["config"]["algorithm_type"]
    elif label == "DPMSolverMultistep":
        label += " dpmsolver++"
    if label == "DDIM":
        label += f" eta={r['eta']:g}"
    return label


def is_default_config(r: dict) -> bool:
    """Whether a diffusers row uses the scheduler's default for every option it sets."""
    import inspect

    import diffusers

    params = inspect.signature(getattr(diffusers, r["sampler"].split(":")[1]).__init__).parameters
    for key, value in r["config"].items():
        default = params[key].default
        if key == "disable_corrector":
            value = [] if value == "all steps" else value
        if value != default:
            return False
    return r["eta"] == 0


def ddpm_markdown(rows: list[dict], counts: dict | None = None, seconds: float = 0.0) -> str:
    """The diffusers comparison: best of each side per NFE, best per family, defaults."""
    if not any(_is_diffusers(r) for r in rows):
        return "## diffusers comparison\n\nSkipped: diffusers is not importable.\n"
    nfes = sorted({r["nfe_budget"] for r in rows})
    out = ["## diffusers comparison: CIFAR-10 spectrum, discrete DDPM schedule", ""]
    out.append("Start N(0, I); exact eps; exact W2 to the data. diffusers: every scheduler")
    out.append("configuration of the sweep (float64 tables); diffkit: every sampler on")
    out.append("`VPSDE(schedule='ddpm')` and the grids of `DDPM_GRIDS`. NFE = model calls made.")
    if counts:
        out.append(
            f"Sweep: {counts['configurations']} (configuration, NFE) pairs, "
            f"{counts['unsupported']} refused by diffusers, {counts['distinct_runs']} distinct "
            f"runs (wall time of the run that made them: "
            f"{counts.get('sweep_wall_seconds', seconds):.0f} s"
            + ("; rows reused here" if "reused_from" in counts else "")
            + ")."
        )
        nan: dict[str, int] = {}
        for r in rows:
            if _is_diffusers(r) and not math.isfinite(r["w2"]):
                key = f"{diffusers_family(r)} ({r['variant']}; {r['grid']})"
                nan[key] = nan.get(key, 0) + 1
        if nan:
            out.append(
                f"{sum(nan.values())} runs returned a non-finite sample (failures): "
                + "; ".join(f"{k}: {v}" for k, v in sorted(nan.items())[:12])
                + (" ..." if len(nan) > 12 else "")
                + "."
            )
    out += ["", "### Best of each side per NFE", ""]
    out.append(
        "| NFE | best diffusers | W2 | best diffkit, fixed grid | W2 | ratio | "
        "best diffkit, optimised grid | W2 | ratio |"
    )
    out.append("|---|---|---|---|---|---|---|---|---|")
    for n in nfes:
        b = _best(rows, n, _is_diffusers)
        a = _best(rows, n, lambda r: not _is_diffusers(r) and r["grid"] != "optimized")
        o = _best(rows, n, lambda r: not _is_diffusers(r) and r["grid"] == "optimized")
        if a is None or b is None:
            continue
        cells = [
            f"{b['label']} ({b['variant']}; {b['grid']}; order {b['order']}; {b['nfe']} NFE)",
            f"{b['w2']:.4g}",
            f"{a['label']} ({a['grid']}, {a['nfe']} NFE)",
            f"{a['w2']:.4g}",
            f"{a['w2'] / b['w2']:.3f}",
        ]
        if o is not None:
            cells += [
                f"{o['label']} ({o['nfe']} NFE)",
                f"{o['w2']:.4g}",
                f"{o['w2'] / b['w2']:.3f}",
            ]
        else:
            cells += ["-", "-", "-"]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    out += ["", "### diffusers: best configuration per scheduler family (W2 (NFE))", ""]
    families = sorted({diffusers_family(r) for r in rows if _is_diffusers(r)})
    out.append("| family | " + " | ".join(str(n) for n in nfes) + " |")
    out.append("|---" * (len(nfes) + 1) + "|")
    for fam in families:
        cells = []
        for n in nfes:
            b = _best(rows, n, lambda r, f=fam: _is_diffusers(r) and diffusers_family(r) == f)
            cells.append(f"{b['w2']:.3g} ({b['nfe']})" if b else "-")
        out.append(f"| {fam} | " + " | ".join(cells) + " |")
    out += ["", "Configurations of those bests:", ""]
    for fam in families:
        for n in nfes:
            b = _best(rows, n, lambda r, f=fam: _is_diffusers(r) and diffusers_family(r) == f)
            if b:
                out.append(f"- {fam}, NFE {n}: order {b['order']}, {b['variant']}; {b['grid']}")
    out += ["", "### diffusers defaults (every option at its default; DDIM eta 0)", ""]
    out.append("| scheduler | " + " | ".join(str(n) for n in nfes) + " |")
    out.append("|---" * (len(nfes) + 1) + "|")
    for fam in families:
        cells = []
        for n in nfes:
            hit = [
                r
                for r in rows
                if _is_diffusers(r)
                and diffusers_family(r) == fam
                and r["nfe_budget"] == n
                and is_default_config(r)
            ]
            cells.append(f"{hit[0]['w2']:.3g} ({hit[0]['nfe']})" if hit else "-")
        if any(c != "-" for c in cells):
            out.append(f"| {fam} | " + " | ".join(cells) + " |")
    out += ["", "### diffkit: best grid per sampler (W2 (NFE), grid)", ""]
    names = [n for n in SAMPLERS if any(r["sampler"] == n for r in rows)]
    out.append("| sampler | " + " | ".join(str(n) for n in nfes) + " |")
    out.append("|---" * (len(nfes) + 1) + "|")
    for name in names:
        cells = []
        for n in nfes:
            a = _best(rows, n, lambda r, m=name: r["sampler"] == m)
            cells.append(f"{a['w2']:.3g} ({a['nfe']}, {a['grid']})" if a else "-")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


#: (data, SDE) panels of the summary, with their NFE budgets.
SUMMARY = [("cifar10", "vp"), ("cifar10", "cld"), ("grf32", "blur")]
SUMMARY_NFES = [5, 10, 15, 20, 50, 100]


#: Sampler families of the compact tables (name prefix -> family), most specific first.
FAMILIES = [
    ("euler_maruyama", "Euler-Maruyama (lam=1)"),
    ("euler_ode", "Euler (PF-ODE)"),
    ("ei", "exponential integrator"),
    ("heun", "Heun"),
    ("ddim_eta1", "DDIM eta=1"),
    ("ddim", "DDIM"),
    ("deis_tab", "DEIS tAB"),
    ("deis_rhoab", "DEIS rhoAB"),
    ("deis_logrho", "DEIS logrho"),
    ("gddim_lam1", "gDDIM lam=1"),
    ("gddim", "gDDIM (R)"),
    ("dpm_solver_eps", "DPM-Solver (eps)"),
    ("dpm_solver", "DPM-Solver++ (x0)"),
    ("sde_dpm_solver", "SDE-DPM-Solver++"),
    ("unipc", "UniPC"),
]


def family(name: str) -> str:
    """The family of a sampler row name (UniPC split by prediction)."""
    label = next(f for prefix, f in FAMILIES if name.startswith(prefix))
    if label == "UniPC":
        label += " (eps)" if "_eps" in name else " (x0)"
    return label


def _panel_rows(rows: list[dict], data: str, sde: str) -> list[dict]:
    """The finite NFE-budget rows of one panel (data set and SDE)."""
    return [
        r
        for r in rows
        if (r["data"], r["sde"]) == (data, sde) and "nfe_budget" in r and math.isfinite(r["w2"])
    ]


def _best_grid_rows(mine: list[dict], nfes: list[int], cell: Callable[[dict], str]) -> list[str]:
    """The table rows of the best fixed and the best optimised grid per NFE (a row only where
    some NFE has one); ``cell(best)`` says which run each best is."""
    out = []
    for label, keep in (
        ("**best, fixed grid**", lambda r: r["grid"] != "optimized"),
        ("**best, optimised grid**", lambda r: r["grid"] == "optimized"),
    ):
        cells = []
        for n in nfes:
            b = _best(mine, n, keep)
            cells.append(f"**{b['w2']:.3g}** ({cell(b)})" if b else "-")
        if any(c != "-" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    return out


def family_markdown(rows: list[dict], data: str, sde: str, nfes: list[int]) -> str:
    """Best W2 per sampler family and NFE (over its members' orders / variants and the fixed
    grids), with the member and grid of each best; then the best fixed and optimised grids."""
    mine = _panel_rows(rows, data, sde)
    if not mine:
        return ""
    out = ["| family | " + " | ".join(f"NFE {n}" for n in nfes) + " |"]
    out.append("|---" * (len(nfes) + 1) + "|")
    fams = list(dict.fromkeys(family(r["sampler"]) for r in mine if r["grid"] != "optimized"))
    for fam in fams:
        cells = []
        for n in nfes:
            b = _best(
                mine,
                n,
                lambda r, f=fam: family(r["sampler"]) == f and r["grid"] != "optimized",
            )
            cells.append(f"{b['w2']:.3g} ({b['sampler']}, {b['grid']})" if b else "-")
        out.append(f"| {fam} | " + " | ".join(cells) + " |")
    out += _best_grid_rows(mine, nfes, lambda b: b["sampler"])
    return "\n".join(out) + "\n"


def summary_markdown(rows: list[dict]) -> str:
    """Per panel: each sampler's best grid per NFE budget, and the best fixed / optimised grid."""
    out = []
    for data, sde in SUMMARY:
        mine = _panel_rows(rows, data, sde)
        if not mine:
            continue
        out += [f"### {data} / {sde}: best grid per sampler (W2, grid; start: the prior)", ""]
        out.append("| sampler | " + " | ".join(str(n) for n in SUMMARY_NFES) + " |")
        out.append("|---" * (len(SUMMARY_NFES) + 1) + "|")
        for name in dict.fromkeys(r["sampler"] for r in mine):
            cells = []
            for n in SUMMARY_NFES:
                b = _best(mine, n, lambda r, m=name: r["sampler"] == m)
                cells.append(f"{b['w2']:.3g} ({b['grid']})" if b else "-")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out += _best_grid_rows(mine, SUMMARY_NFES, lambda b: f"{b['sampler']}, {b['grid']}")
        out.append("")
    return "\n".join(out)


def markdown(rows: list[dict], pg: list[dict], nfes: list[int]) -> str:
    out = ["# Sampler benchmark: exact W2 on Gaussian data", ""]
    out.append("W2 to the data law N(0, diag lambda), exact (covariance propagation of the real")
    out.append("sampler code; no Monte Carlo). Start: the SDE's prior. Columns: NFE.")
    out.append("")
    out += ["## Summary: best per sampler family", ""]
    for data, sde in SUMMARY:
        table = family_markdown(rows, data, sde, SUMMARY_NFES)
        if table:
            out += [f"### {data} / {sde}", "", table]
    out += ["## Summary: best grid per sampler", "", summary_markdown(rows), ""]
    keys = sorted({(r["data"], r["sde"], r["grid"]) for r in rows})
    for data, sde, grid in keys:
        out.append(f"## {data} / {sde} / {grid} grid")
        out.append("")
        out.append("| sampler | " + " | ".join(str(n) for n in nfes) + " |")
        out.append("|---" * (len(nfes) + 1) + "|")
        names = []
        for r in rows:
            if (r["data"], r["sde"], r["grid"]) == (data, sde, grid) and r["sampler"] not in names:
                names.append(r["sampler"])
        for name in names:
            cells = []
            for n in nfes:
                hit = [
                    r
                    for r in rows
                    if (r["data"], r["sde"], r["grid"], r["sampler"]) == (data, sde, grid, name)
                    and max(n // SAMPLERS[name].per_step, 1) == r["steps"]
                ]
                cells.append(f"{hit[0]['w2']:.3g} ({hit[0]['nfe']})" if hit else "-")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
    if pg:
        out.append("## Pierret-Galerne table (VP, CIFAR-10 spectrum, N grid points)")
        out.append("")
        out.append("| scheme | eps | start | N | NFE | W2 (diffkit) | published | |diff| |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in pg:
            out.append(
                f"| {r['scheme']} | {r['eps']:g} | {r['start']} | {r['grid_points']} | "
                f"{r['nfe']} | {r['w2']:.3f} | {r['published']:.2f} | {r['abs_diff']:.3f} |"
            )
        worst = max(r["abs_diff"] for r in pg)
        out.append("")
        out.append(f"Largest deviation from the published table: {worst:.4f}.")
    return "\n".join(out) + "\n"


#: Samplers drawn in the plot (one line each: the best grid per NFE).
PLOT_SAMPLERS = [
    "euler_maruyama",
    "heun",
    "ddim",
    "ddim_eta1",
    "deis_tab3",
    "deis_rhoab2",
    "deis_logrho3",
    "gddim_ms2",
    "dpm_solver2",
    "dpm_solver3",
    "sde_dpm_solver2",
    "unipc2_bh2",
    "unipc3_bh1",
]


def plot(rows: list[dict], path: Path) -> None:
    """W2 vs NFE per (data, SDE) panel: each sampler on its best fixed grid per NFE, and the
    best optimised grid (black) where there is one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["data"], r["sde"]) for r in rows})
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.4 * cols, 3.6 * nrows), squeeze=False)
    colors = plt.get_cmap("tab20")
    for ax, (data, sde) in zip(axes.flat, panels, strict=False):
        mine = [
            r
            for r in rows
            if (r["data"], r["sde"]) == (data, sde) and r["nfe"] > 0 and math.isfinite(r["w2"])
        ]
        budgets = sorted({r.get("nfe_budget", r["nfe"]) for r in mine})
        for c, name in enumerate(PLOT_SAMPLERS):
            pts = []
            for n in budgets:
                b = _best(
                    [{"nfe_budget": r["nfe"], **r} for r in mine],
                    n,
                    lambda r, m=name: r["sampler"] == m and r["grid"] != "optimized",
                )
                if b is not None:
                    pts.append((n, b["w2"]))
            if pts:
                x, y = zip(*pts, strict=True)
                ax.loglog(x, y, "-", marker=".", color=colors(c), label=name)
        opt = sorted((r["nfe"], r["w2"]) for r in mine if r["grid"] == "optimized" and r["nfe"] > 0)
        best_opt: dict[int, float] = {}
        for n, w in opt:
            best_opt[n] = min(w, best_opt.get(n, math.inf))
        if best_opt:
            x, y = zip(*sorted(best_opt.items()), strict=True)
            ax.loglog(x, y, "k--", marker="o", ms=3, label="best, optimised grid")
        ax.set_title(f"{data} / {sde} (best fixed grid per NFE)", fontsize=8)
        ax.set_xlabel("NFE")
        ax.set_ylabel("exact W2")
        ax.set_ylim(top=min(ax.get_ylim()[1], 1e3))
    axes.flat[0].legend(fontsize=5.5, ncol=2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


#: Grids of the main matrix; NFEs above 100 only on FULL_GRIDS.
MAIN_GRIDS = ["uniform", "quadratic", "log_snr", "karras"]
FULL_GRIDS = ("uniform", "quadratic")
#: Samplers of the quick (smoke) run.
QUICK_SAMPLERS = ("ddim", "deis_tab2", "heun", "euler_maruyama")


#: Samplers added with the log-SNR solvers: on VP and CLD (CIFAR-10) and blur (GRF32), NFE <= 100.
NEW_SAMPLERS = [n for n in SAMPLERS if n.startswith(("dpm_solver", "sde_dpm", "unipc", "deis_log"))]
NEW_PAIRS = {("vp", "cifar10"), ("cld", "cifar10"), ("blur", "grf32")}


def main_jobs(nfes: list[int], quick: bool) -> list[tuple]:
    """Jobs ``(sde, data, grid, nfes, samplers)`` of the main matrix, longest (CLD) first."""
    if quick:
        return [("vp", "cifar10", g, nfes, list(QUICK_SAMPLERS)) for g in ("uniform", "log_snr")]
    jobs = []
    old = [n for n in SAMPLERS if n not in NEW_SAMPLERS]
    low = [n for n in nfes if n <= 100]
    for sde_name in make_sdes():
        for data_name in spectra(sde_name):
            for grid in MAIN_GRIDS:
                jobs.append((sde_name, data_name, grid, nfes if grid in FULL_GRIDS else low, old))
                if (sde_name, data_name) in NEW_PAIRS:
                    jobs.append((sde_name, data_name, grid, low, NEW_SAMPLERS))
    jobs.sort(key=lambda j: j[0] != "cld")
    return jobs


def submit_ddpm(
    pool: ProcessPoolExecutor, quick: bool, reuse: Path | None = None
) -> tuple[list, dict, list[dict]]:
    """Submit the diffusers comparison (sweep chunks, heaviest first, and diffkit's grids);
    with ``reuse``, the sweep's rows are read from that earlier ``samplers*.json`` instead."""
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("diffusers is not importable: skipping the diffusers comparison", flush=True)
        return [], {}, []
    nfes = [5, 10] if quick else DDPM_NFES
    names = list(QUICK_SAMPLERS) if quick else list(SAMPLERS)
    grids = DDPM_GRIDS[:2] if quick else DDPM_GRIDS
    diffkit = [pool.submit(run_ddpm_diffkit_job, g, t, d, nfes, names) for g, t, d in grids]
    if reuse is not None:
        old = json.loads(reuse.read_text())
        rows = [r for r in old["rows"] if r["sampler"].startswith("diffusers:")]
        counts = {**old["diffusers_sweep"], "reused_from": str(reuse)}
        counts["sweep_wall_seconds"] = old.get("sweep_wall_seconds", old["wall_seconds"])
        return diffkit, counts, rows
    runs, counts = plan_diffusers_sweep(nfes, quick)

    def cost(run: tuple) -> float:  # stochastic runs carry one row per step
        _, config, eta, nfe, _ = run
        sde = eta > 0 or str(config.get("algorithm_type", "")).startswith("sde")
        return nfe * (nfe if sde else 1) + 5

    runs = sorted(runs, key=cost, reverse=True)
    chunks, chunk, load = [], [], 0.0
    for run in runs:
        chunk.append(run)
        load += cost(run)
        if load > 3000:
            chunks.append(chunk)
            chunk, load = [], 0.0
    if chunk:
        chunks.append(chunk)
    futures = [pool.submit(run_diffusers_chunk, c) for c in chunks]
    return futures + diffkit, counts, []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: VP / CIFAR-10 at NFE 10, a few diffusers configurations at NFE 5 and 10",
    )
    parser.add_argument("--skip-pg", action="store_true", help="skip the Pierret-Galerne table")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument(
        "--skip-optimized", action="store_true", help="skip the optimised-grid rows"
    )
    parser.add_argument(
        "--panels",
        type=str,
        default="",
        help="main-matrix panels to run, e.g. vp:cifar10,cld:cifar10,blur:grf32 (default: all)",
    )
    parser.add_argument("--max-nfe", type=int, default=1000, help="largest NFE of the matrix")
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        help="only rewrite samplers.md and the plot into --out from this samplers.json",
    )
    parser.add_argument(
        "--diffusers-rows",
        type=Path,
        default=None,
        help="reuse the diffusers sweep's rows from an earlier samplers*.json (its wall time "
        "is reported as the sweep's)",
    )
    parser.add_argument(
        "--skip-diffusers", action="store_true", help="skip the diffusers comparison"
    )
    parser.add_argument(
        "--only-diffusers",
        action="store_true",
        help="run only the diffusers comparison (writes samplers_diffusers.{json,md})",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render is not None:
        render(args.render, args.out)
        return
    t0 = time.perf_counter()
    nfes = [10] if args.quick else [5, 10, 15, 20, 50, 100, 250, 1000]
    nfes = [n for n in nfes if n <= args.max_nfe]
    jobs = [] if args.only_diffusers else main_jobs(nfes, args.quick)
    if args.panels:
        keep = {tuple(p.split(":")) for p in args.panels.split(",")}
        jobs = [j for j in jobs if (j[0], j[1]) in keep]
    rows: list[dict] = []
    pg: list[dict] = []
    ddpm: list[dict] = []
    counts: dict = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_job, *job) for job in jobs[:2]]
        run_pg = not (args.skip_pg or args.quick or args.only_diffusers)
        pg_future = pool.submit(reproduce_pg, cifar10_spectrum()) if run_pg else None
        ddpm_futures: list = []
        if not args.skip_diffusers:
            ddpm_futures, counts, ddpm = submit_ddpm(pool, args.quick, args.diffusers_rows)
        opt_futures: dict[str, list] = {"vp": [], "vp_ddpm": []}
        if not (args.quick or args.skip_optimized):
            for sde_name, fut_list in opt_futures.items():
                if sde_name == "vp" and args.only_diffusers:
                    continue
                if sde_name == "vp_ddpm" and args.skip_diffusers:
                    continue
                for name in OPT_SAMPLERS:
                    fut_list.append(pool.submit(run_optimized_job, sde_name, name, OPT_NFES))
        futures += [pool.submit(run_job, *job) for job in jobs[2:]]
        for fut in futures + opt_futures["vp"]:
            rows.extend(_result(fut))
        if pg_future is not None:
            pg = _result(pg_future)
            if pg:
                worst = max(r["abs_diff"] for r in pg)
                print(f"PG table: largest |diff| = {worst:.4f}", flush=True)
        for fut in ddpm_futures + opt_futures["vp_ddpm"]:
            ddpm.extend(_result(fut))
    wall = time.perf_counter() - t0
    info = _machine_info()
    name = "samplers_diffusers" if args.only_diffusers else "samplers"
    payload = {
        "benchmark": "bench_samplers",
        "machine": info,
        "wall_seconds": wall,
        "workers": args.workers,
        "quick": args.quick,
        "diffusers_sweep": counts,
        "rows": rows + ddpm,
        "pierret_galerne": pg,
    }
    (args.out / f"{name}.json").write_text(json.dumps(payload, indent=1, default=str))
    text = "" if args.only_diffusers else markdown(rows, pg, nfes)
    if ddpm or not args.skip_diffusers:
        text += ("\n" if text else "") + ddpm_markdown(ddpm, counts, wall)
    text += f"\nWall time {wall:.0f} s with {args.workers} worker processes; {info}.\n"
    (args.out / f"{name}.md").write_text(text)
    if rows:
        plot(rows, args.out / "samplers_w2.png")
    print(f"wrote {args.out} in {wall:.1f} s")


def render(path: Path, out: Path) -> None:
    """Markdown and plot of an earlier run's JSON (no sampling)."""
    payload = json.loads(path.read_text())
    all_rows = payload["rows"]
    ddpm = [r for r in all_rows if r["sde"] == "vp_ddpm"]
    rows = [r for r in all_rows if r["sde"] != "vp_ddpm"]
    nfes = sorted({r["nfe_budget"] for r in rows if "nfe_budget" in r})
    text = markdown(rows, payload.get("pierret_galerne", []), nfes) if rows else ""
    if ddpm:
        text += "\n" + ddpm_markdown(ddpm, payload.get("diffusers_sweep"), payload["wall_seconds"])
    text += f"\nWall time {payload['wall_seconds']:.0f} s; {payload['machine']}.\n"
    (out / "samplers.md").write_text(text)
    if rows:
        plot(rows, out / "samplers_w2.png")


def _result(fut) -> list[dict]:
    """A job's rows; a job that fails is reported and contributes none (the rest is kept)."""
    try:
        return fut.result()
    except Exception as err:
        print(f"job failed: {type(err).__name__}: {err}", flush=True)
        return []


def _machine_info() -> str:
    """One line of machine facts (CPU, cores, load) for the report."""
    import os
    import platform

    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {load}"


if __name__ == "__main__":
    main()
