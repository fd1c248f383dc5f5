"""Exact-W2 benchmark of the samplers on Gaussian data (no Monte Carlo).

Data ``N(0, diag(lambda))`` with the CIFAR-10 covariance spectrum
(``/work/shared/data/cifar10_cov_eigenvalues.npy``, pixels in [-1, 1]) or the synthetic GRF32
spectrum ``lambda_{c,i,j} = 100 / (1 + i^2 + j^2)^1.5`` (DCT-diagonal, so it also serves the
blurring SDE) [docs/background/samplers.md#exactness]. The score is the exact linear one. Every
sampler used here is
linear in the state, so it maps Gaussians to Gaussians; the *real sampler code* is run on a few
deterministic rows per eigendirection and the output law is computed exactly:

* deterministic samplers (incl. multistep ones): one run with the identity rows gives the total
  linear map ``M`` per eigendirection, and ``C_out = M C_start M^T``;
* single-step stochastic samplers (EM, DDIM eta > 0, stochastic gDDIM, Heun with churn): a
  noise source returns unit noise on dedicated rows, and a step callback reads each step's
  ``u' = M_k u + B_k z`` and resets the rows, so ``C <- M_k C M_k^T + B_k B_k^T`` exactly.

W2 to the data law is ``sqrt(sum_i (sqrt(lambda_i) - sqrt(c_i))^2)`` with ``c_i`` the output
variance of the data part (CLD: the position marginal). The predictor-corrector sampler is not
linear (its Langevin step size uses batch norms) and is left out.

Also reproduces the Pierret-Galerne table [PG, 2405.14250, Table 2] for EM, EI, Euler and Heun on
their grid (N grid points = N - 1 uniform steps from T to eps).

diffusers comparison (when diffusers is importable; benchmark-only extra ``bench``):
DDIMScheduler, DPMSolverMultistepScheduler (DPM-Solver++ 2M, 3M, 2M Karras),
DEISMultistepScheduler, UniPCMultistepScheduler, EulerDiscreteScheduler and
HeunDiscreteScheduler on their discrete DDPM schedule (1000 betas linear 1e-4..0.02), driven by
the exact eps-model of the CIFAR-10-spectrum Gaussian, against diffkit's samplers on
``VPSDE(schedule="ddpm")`` (DDPM index i is diffkit time (i + 1) / 1000). With a linear
eps-model every one of these schedulers is deterministic and linear in x and acts on each
eigendirection separately, so one run on the all-ones vector (times ``init_noise_sigma``) gives
the total linear map ``m_i`` per eigendirection and the output variance is ``m_i^2`` (start
N(0, I)); the scheduler code runs unchanged (its float32 tables included).

Usage: ``python tools/bench_samplers.py --out DIR [--quick] [--skip-pg] [--skip-diffusers |
--only-diffusers]``; writes ``samplers.json``, ``samplers.md`` and ``samplers_w2.png`` to DIR
(``--only-diffusers``: ``samplers_diffusers.{json,md}``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffkit.prediction import Prediction
from diffkit.samplers.base import Sampler
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.samplers.exponential_integrator import ExponentialIntegrator
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.heun import Heun
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import point_kernel
from diffkit.sdes.operators import LinearOp

CIFAR_SPECTRUM = Path("/work/shared/data/cifar10_cov_eigenvalues.npy")


# ----------------------------------------------------------------------------- data
def cifar_spectrum() -> Tensor:
    return torch.from_numpy(np.load(CIFAR_SPECTRUM).astype(np.float64))


def grf32_spectrum() -> Tensor:
    """``(3, 32, 32)``: ``100 / (1 + i^2 + j^2)^1.5`` per channel
    (docs/background/samplers.md#exactness)."""
    i = torch.arange(32, dtype=torch.float64)
    lam = 100.0 / (1 + i[:, None] ** 2 + i[None, :] ** 2) ** 1.5
    return lam.expand(3, 32, 32).clone()


class LinearGaussianScore:
    """Exact score ``-C_t^{-1} u`` of ``N(0, cov)`` (state covariance, one row)."""

    def __init__(self, sde: LinearSDE, cov: LinearOp) -> None:
        self.sde, self.cov = sde, cov

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        k = point_kernel(self.sde, t)
        c_t = k.mean_op @ self.cov @ k.mean_op.T + k.cov
        return Prediction(u, t, -c_t.solve(u), self.sde.kernel(t), "score")


def data_cov(sde: LinearSDE, lam: Tensor) -> LinearOp:
    """State covariance of ``N(0, diag lam)`` in the SDE's basis (CLD: ``diag(lam, gamma M)``)."""
    basis = sde.transition(torch.ones(1), torch.zeros(1)).basis
    if sde.block == 2:
        z = torch.zeros_like(lam)
        c = torch.stack(
            [torch.stack([lam, z], -1), torch.stack([z, z + sde.velocity_variance], -1)], -2
        )
        return LinearOp(c[None], basis)
    return LinearOp.diagonal(lam[None], basis=basis)


# ----------------------------------------------------------------------------- exact propagation
class Modes:
    """Per-eigendirection view of states ``(B, *state)`` as ``(B, modes, k)``."""

    def __init__(self, sde: LinearSDE, data_shape: tuple[int, ...]) -> None:
        self.sde, self.data_shape, self.k = sde, data_shape, sde.block
        self.basis = sde.transition(torch.ones(1), torch.zeros(1)).basis
        self.n = math.prod(data_shape)

    def to_modes(self, u: Tensor) -> Tensor:
        if self.basis is not None:
            u = self.basis.forward(u)
        if self.k == 1:
            return u.reshape(u.shape[0], self.n, 1)
        return u.reshape(u.shape[0], 2, self.n).transpose(1, 2)

    def from_modes(self, m: Tensor) -> Tensor:
        b = m.shape[0]
        u = m.reshape(b, self.n) if self.k == 1 else m.transpose(1, 2).reshape(b, 2, self.n)
        u = u.reshape(b, *self.sde.state_shape(self.data_shape))
        if self.basis is not None:
            u = self.basis.inverse(u)
        return u

    def unit_rows(self) -> Tensor:
        """``(k, modes, k)``: row j is the unit vector e_j in every eigendirection."""
        eye = torch.eye(self.k, dtype=torch.float64)
        return eye[:, None, :].expand(self.k, self.n, self.k).clone()


def _mode_cov(op: LinearOp, modes: Modes) -> Tensor:
    """A one-row operator's blocks per eigendirection, ``(modes, k, k)``."""
    c = op.coef[0]
    k = modes.k
    full = c.expand(*modes.data_shape, k, k)
    return full.reshape(modes.n, k, k).to(torch.float64)


def propagate(
    sampler: Sampler, sde: LinearSDE, model, start_cov: Tensor, modes: Modes
) -> tuple[Tensor, int]:
    """Exact output covariance ``(modes, k, k)`` of ``sampler`` started at ``N(0, start_cov)``."""
    k = modes.k
    shape = (0, *modes.data_shape)
    if not sampler.stochastic:
        rows = modes.from_modes(modes.unit_rows())
        res = sampler.sample(model, sde, (k, *shape[1:]), u_T=rows, dtype=torch.float64)
        m = modes.to_modes(res.u).permute(1, 2, 0)  # (modes, k_out, k_in)
        return m @ start_cov @ m.mT, res.nfe
    unit = modes.unit_rows()
    init = torch.cat([unit, torch.zeros_like(unit)])  # k deterministic rows, k noise rows
    noise_rows = torch.cat([torch.zeros_like(unit), unit])
    z_state = modes.from_modes(noise_rows)
    reset = modes.from_modes(init)
    cov = [start_cov]

    def on_step(i: int, u: Tensor) -> None:
        m = modes.to_modes(u)
        mk = m[:k].permute(1, 2, 0)  # (modes, k, k): columns = images of e_j
        bk = m[k:].permute(1, 2, 0)
        cov[0] = mk @ cov[0] @ mk.mT + bk @ bk.mT
        u.copy_(reset)

    sampler.noise_source = lambda u: z_state
    try:
        res = sampler.sample(
            model,
            sde,
            (2 * k, *shape[1:]),
            u_T=reset.clone(),
            dtype=torch.float64,
            callback=on_step,
        )
    finally:
        sampler.noise_source = None
    return cov[0], res.nfe


def w2_to_data(lam: Tensor, cov: Tensor, weights: Tensor | None = None) -> float:
    """Exact W2 between ``N(0, diag lam)`` and the data part of ``N(0, cov)`` (commuting)."""
    var = cov[:, 0, 0].clamp_min(0)
    sq = (lam.reshape(-1).sqrt() - var.sqrt()) ** 2
    if weights is not None:
        sq = sq * weights.reshape(-1)
    return float(sq.sum().sqrt())


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
    model = LinearGaussianScore(sde, cov)
    c_T = _mode_cov(point_kernel(sde, torch.ones(1)).cov, modes) + sde.alpha(
        1.0
    ) ** 2 * lam.reshape(-1, 1, 1)
    starts = {"N(0,I)": torch.ones(modes.n, 1, 1, dtype=torch.float64), "p_T": c_T}
    rows = []
    for (scheme, eps), cells in PG_TABLE.items():
        for n_points, published in cells.items():
            for j, (start, c0) in enumerate(starts.items()):
                ref = published[j] if j == 0 else (published[1] or published[0])
                out, nfe = propagate(pg_sampler(scheme, n_points, eps), sde, model, c0, modes)
                w2 = w2_to_data(lam, out)
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


#: name -> (factory(steps, grid), variant, order, NFE per step, stochastic-only-for-scalar)
SAMPLERS: dict[str, tuple[Callable[[int, str], Sampler], str, int, int]] = {
    "euler_maruyama": (lambda n, g: EulerMaruyama(n, grid=g, lam=1.0), "lam=1", 1, 1),
    "euler_ode": (lambda n, g: EulerMaruyama(n, grid=g, lam=0.0), "lam=0", 1, 1),
    "ei": (lambda n, g: ExponentialIntegrator(n, grid=g, lam=1.0), "lam=1", 1, 1),
    "heun": (lambda n, g: Heun(n, grid=g), "pf-ode", 2, 2),
    "ddim": (lambda n, g: DDIM(n, grid=g), "eta=0", 1, 1),
    "ddim_eta1": (lambda n, g: DDIM(n, grid=g, eta=1.0), "eta=1", 1, 1),
    "deis_tab1": (lambda n, g: DEIS(n, grid=g, order=1), "tab", 1, 1),
    "deis_tab2": (lambda n, g: DEIS(n, grid=g, order=2), "tab", 2, 1),
    "deis_tab3": (lambda n, g: DEIS(n, grid=g, order=3), "tab", 3, 1),
    "deis_rhoab2": (lambda n, g: DEIS(n, grid=g, order=2, variant="rhoab"), "rhoab", 2, 1),
    "gddim": (lambda n, g: GDDIM(n, grid=g), "lam=0", 0, 1),
    "gddim_ms2": (lambda n, g: GDDIM(n, grid=g, order=2), "lam=0", 2, 1),
    "gddim_lam1": (lambda n, g: GDDIM(n, grid=g, lam=1.0), "lam=1", 0, 1),
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
    cifar = cifar_spectrum()
    uniq, counts = torch.unique(grf.reshape(-1), return_counts=True)
    return {
        "cifar10": (cifar, torch.ones_like(cifar)),
        "grf32": (uniq, counts.to(torch.float64)),
    }


def run_job(sde_name: str, data_name: str, grid: str, nfes: list[int], quick: bool) -> list[dict]:
    """All samplers x NFEs for one (SDE, data, grid)."""
    torch.set_num_threads(1)
    sde = make_sdes()[sde_name]()
    lam, weights = spectra(sde_name)[data_name]
    modes = Modes(sde, tuple(lam.shape))
    model = LinearGaussianScore(sde, data_cov(sde, lam))
    start = _mode_cov(sde.prior_cov(), modes)
    rows = []
    for name, (factory, variant, order, per_step) in SAMPLERS.items():
        if sde.block == 1 and name in SCALAR_DUPLICATES:
            continue
        if quick and name in ("deis_tab1", "deis_rhoab2", "euler_ode"):
            continue
        for nfe in nfes:
            steps = max(nfe // per_step, 1)
            sampler = factory(steps, grid)
            t0 = time.perf_counter()
            try:
                out, used = propagate(sampler, sde, model, start, modes)
                w2 = w2_to_data(lam, out, weights)
            except (ValueError, RuntimeError) as err:  # report, keep going
                used, w2 = -1, float("nan")
                print(f"  {sde_name}/{name}/{grid}/{nfe}: {err}", flush=True)
            rows.append(
                {
                    "data": data_name,
                    "sde": sde_name,
                    "sampler": name,
                    "variant": variant,
                    "order": order,
                    "grid": grid,
                    "t_min": sde.t_min,
                    "steps": steps,
                    "nfe": used,
                    "w2": w2,
                    "seconds": time.perf_counter() - t0,
                }
            )
    print(f"{data_name:8s} {sde_name:5s} {grid:9s} done", flush=True)
    return rows


# ----------------------------------------------------------------------------- diffusers
#: NFE budgets of the diffusers comparison.
DDPM_NFES = [10, 20, 50, 100]

#: label -> (diffusers class name, variant, order, extra config, NFE per step)
DIFFUSERS: dict[str, tuple[str, str, int, dict, int]] = {
    "ddim": ("DDIMScheduler", "eta=0 trailing", 1, {"timestep_spacing": "trailing"}, 1),
    "dpm++2m": ("DPMSolverMultistepScheduler", "dpmsolver++ 2M", 2, {"solver_order": 2}, 1),
    "dpm++3m": ("DPMSolverMultistepScheduler", "dpmsolver++ 3M", 3, {"solver_order": 3}, 1),
    "dpm++2m_karras": (
        "DPMSolverMultistepScheduler",
        "dpmsolver++ 2M karras",
        2,
        {"solver_order": 2, "use_karras_sigmas": True},
        1,
    ),
    "deis": ("DEISMultistepScheduler", "logrho 3", 3, {"solver_order": 3}, 1),
    "unipc": ("UniPCMultistepScheduler", "bh2 2", 2, {"solver_order": 2}, 1),
    "euler": ("EulerDiscreteScheduler", "euler", 1, {}, 1),
    "heun": ("HeunDiscreteScheduler", "heun", 2, {}, 2),
}

#: diffkit samplers run on the ddpm-schedule VP SDE (names from SAMPLERS) and their grids.
DDPM_DIFFKIT = ["ddim", "ei", "euler_ode", "heun", "deis_tab2", "deis_tab3", "deis_rhoab2"]
#: (grid, t_min): t_min = 0 ends at alpha_bar = 1 like diffusers' final step; log_snr and edm
#: need t_min > 0 and stop at DDPM index 0 (t = 1e-3), where diffusers' DEIS also stops.
DDPM_GRIDS = [("uniform", 0.0), ("quadratic", 0.0), ("log_snr", 1e-3), ("edm", 1e-3)]


def ddpm_alpha_bar() -> Tensor:
    """DDPM's discrete ``alpha_bar_i``, i = 0..999 (betas linear 1e-4..0.02), float64."""
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


class DiffusersEpsModel:
    """Exact eps-model of ``N(0, diag lam)`` for a diffusers scheduler.

    ``eps(x, t) = sqrt(1 - ab) x / (ab lam + 1 - ab)`` with ``x`` the VP-scaled model input
    (what ``scale_model_input`` returns) and ``ab = 1 / (1 + sigma(t)^2)``, where ``sigma(t)``
    interpolates ``sqrt((1 - ab_i) / ab_i)`` linearly in ``t`` (diffusers' rule for fractional
    timesteps; exact at integer ones).
    """

    def __init__(self, lam: Tensor) -> None:
        ab = ddpm_alpha_bar()
        self.lam, self.sigmas = lam.reshape(-1), ((1 - ab) / ab).sqrt().numpy()
        self.calls = 0

    def __call__(self, x: Tensor, t) -> Tensor:
        self.calls += 1
        sig = float(np.interp(float(t), np.arange(1000), self.sigmas))
        ab = 1.0 / (1.0 + sig**2)
        return (math.sqrt(1 - ab) * x.to(torch.float64) / (ab * self.lam + 1 - ab)).to(x.dtype)


def run_diffusers(label: str, nfe: int, lam: Tensor) -> dict:
    """One scheduler at one NFE budget: its total linear map per eigendirection (the
    scheduler is deterministic and linear in x for a linear eps-model), applied to N(0, I)."""
    import diffusers

    cls_name, variant, order, extra, per_step = DIFFUSERS[label]
    cfg = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    cfg["beta_schedule"] = "linear"
    if cls_name in ("DDIMScheduler", "HeunDiscreteScheduler"):
        cfg["clip_sample"] = False
    if cls_name == "DDIMScheduler":
        cfg["set_alpha_to_one"] = True
    sched = getattr(diffusers, cls_name)(**cfg, **extra)
    steps = (nfe + 1) // 2 if per_step == 2 else nfe
    sched.set_timesteps(steps)
    model = DiffusersEpsModel(lam)
    t0 = time.perf_counter()
    x = torch.ones(1, lam.numel(), dtype=torch.float64) * float(sched.init_noise_sigma)
    for t in sched.timesteps:
        inp = sched.scale_model_input(x, t)
        x = sched.step(model(inp, t), t, x).prev_sample
    var = x.to(torch.float64)[0] ** 2  # start N(0, I) in VP space
    return {
        "data": "cifar10_ddpm",
        "sde": "vp",
        "sampler": f"diffusers:{cls_name}",
        "label": label,
        "variant": variant,
        "order": order,
        "grid": sched.config.timestep_spacing,
        "t_min": 0.0,
        "steps": steps,
        "nfe_budget": nfe,
        "nfe": model.calls,
        "w2": w2_to_data(lam, var.reshape(-1, 1, 1)),
        "seconds": time.perf_counter() - t0,
    }


def run_ddpm_job() -> list[dict]:
    """diffusers schedulers and diffkit samplers on the discrete DDPM schedule (same data)."""
    from diffkit.sdes.vp import VPSDE

    torch.set_num_threads(1)
    lam = cifar_spectrum()
    rows = []
    try:
        import diffusers  # noqa: F401
    except ImportError:
        print("diffusers is not importable: skipping the diffusers comparison", flush=True)
        return rows
    for label in DIFFUSERS:
        for nfe in DDPM_NFES:
            rows.append(run_diffusers(label, nfe, lam))
    # diffkit on VPSDE(schedule="ddpm"): t = (i + 1) / 1000 is DDPM index i, so diffusers'
    # trailing grid 999, 899, ... plus the final step to alpha_bar = 1 is the uniform grid 1 -> 0.
    for grid, t_min in DDPM_GRIDS:
        sde = VPSDE(beta_min=0.1, beta_max=20.0, schedule="ddpm", t_min=t_min)
        modes = Modes(sde, (lam.numel(),))
        model = LinearGaussianScore(sde, data_cov(sde, lam))
        start = torch.ones(modes.n, 1, 1, dtype=torch.float64)
        for name in DDPM_DIFFKIT:
            factory, variant, order, per_step = SAMPLERS[name]
            for nfe in DDPM_NFES:
                steps = max(nfe // per_step, 1)
                t0 = time.perf_counter()
                out, used = propagate(factory(steps, grid), sde, model, start, modes)
                rows.append(
                    {
                        "data": "cifar10_ddpm",
                        "sde": "vp",
                        "sampler": name,
                        "label": name,
                        "variant": variant,
                        "order": order,
                        "grid": grid,
                        "t_min": t_min,
                        "steps": steps,
                        "nfe_budget": nfe,
                        "nfe": used,
                        "w2": w2_to_data(lam, out),
                        "seconds": time.perf_counter() - t0,
                    }
                )
    print("cifar10_ddpm (diffusers comparison) done", flush=True)
    return rows


def ddpm_markdown(rows: list[dict]) -> str:
    """Tables of the diffusers comparison (all rows, then best of each side per NFE)."""
    if not rows:
        return "## diffusers comparison\n\nSkipped: diffusers is not importable.\n"
    out = ["## diffusers comparison: CIFAR-10 spectrum, discrete DDPM schedule", ""]
    out.append("Start N(0, I); exact eps; W2 to the data (cells: W2 (NFE)). diffusers")
    out.append("schedulers with their defaults (DDIM: trailing spacing); diffkit samplers on")
    out.append("`VPSDE(schedule='ddpm')`, t_min 0 on uniform (= diffusers' trailing grid) and")
    out.append("quadratic grids, t_min 1e-3 (DDPM index 0) on log_snr and edm grids.")
    out.append("")
    out.append("| sampler | variant | grid | " + " | ".join(str(n) for n in DDPM_NFES) + " |")
    out.append("|---" * (len(DDPM_NFES) + 3) + "|")
    keys = []
    for r in rows:
        k = (r["sampler"], r["variant"], r["grid"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        cells = [r for r in rows if (r["sampler"], r["variant"], r["grid"]) == k]
        cells = sorted(cells, key=lambda r: r["nfe_budget"])
        out.append(
            f"| {k[0]} | {k[1]} | {k[2]} | "
            + " | ".join(f"{r['w2']:.3g} ({r['nfe']})" for r in cells)
            + " |"
        )
    out.append("")
    out.append("Best per NFE budget (Heun-type rows use NFE budget - 1 or budget):")
    out.append("")
    out.append("| NFE | best diffkit | W2 | best diffusers | W2 | ratio diffkit/diffusers |")
    out.append("|---|---|---|---|---|---|")
    for n in DDPM_NFES:
        best = {}
        for side, pick in (("diffkit", False), ("diffusers", True)):
            cand = [
                r
                for r in rows
                if r["sampler"].startswith("diffusers:") == pick and r["nfe_budget"] == n
            ]
            best[side] = min(cand, key=lambda r: r["w2"])
        a, b = best["diffkit"], best["diffusers"]
        out.append(
            f"| {n} | {a['label']} ({a['grid']}, {a['nfe']}) | {a['w2']:.4g} | "
            f"{b['label']} ({b['variant']}, {b['nfe']}) | {b['w2']:.4g} | "
            f"{a['w2'] / b['w2']:.3f} |"
        )
    return "\n".join(out) + "\n"


def markdown(rows: list[dict], pg: list[dict], nfes: list[int]) -> str:
    out = ["# Sampler benchmark: exact W2 on Gaussian data", ""]
    out.append("W2 to the data law N(0, diag lambda), exact (covariance propagation of the real")
    out.append("sampler code; no Monte Carlo). Start: the SDE's prior. Columns: NFE.")
    out.append("")
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
                    and max(n // SAMPLERS[name][3], 1) == r["steps"]
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


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["data"], r["sde"]) for r in rows})
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    colors = plt.get_cmap("tab20")
    for ax, (data, sde) in zip(axes.flat, panels, strict=False):
        for c, name in enumerate(SAMPLERS):
            for grid, style in (("quadratic", "-"), ("uniform", ":")):
                pts = sorted(
                    (r["nfe"], r["w2"])
                    for r in rows
                    if (r["data"], r["sde"], r["sampler"], r["grid"]) == (data, sde, name, grid)
                    and r["nfe"] > 0
                    and math.isfinite(r["w2"])
                )
                if pts:
                    x, y = zip(*pts, strict=True)
                    label = name if grid == "quadratic" else None
                    ax.loglog(x, y, style, marker=".", color=colors(c), label=label)
        ax.set_title(f"{data} / {sde} (solid: quadratic, dotted: uniform)", fontsize=8)
        ax.set_xlabel("NFE")
        ax.set_ylabel("exact W2")
    axes.flat[0].legend(fontsize=6)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_out"))
    parser.add_argument("--quick", action="store_true", help="fewer NFEs and samplers")
    parser.add_argument("--skip-pg", action="store_true", help="skip the Pierret-Galerne table")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
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
    t0 = time.perf_counter()
    if args.only_diffusers:
        ddpm = run_ddpm_job()
        (args.out / "samplers_diffusers.json").write_text(json.dumps({"rows": ddpm}, indent=1))
        (args.out / "samplers_diffusers.md").write_text(ddpm_markdown(ddpm))
        print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")
        return
    nfes = [10, 20, 50] if args.quick else [10, 20, 50, 100, 250, 1000]
    grids = ["uniform", "quadratic"]
    jobs = [
        (sde_name, data_name, grid, nfes, args.quick)
        for sde_name in make_sdes()
        for data_name in spectra(sde_name)
        for grid in grids
    ]
    jobs.sort(key=lambda j: j[0] != "cld")  # longest first
    rows: list[dict] = []
    pg: list[dict] = []
    ddpm: list[dict] = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_job, *job) for job in jobs[:2]]
        pg_future = None if args.skip_pg else pool.submit(reproduce_pg, cifar_spectrum())
        ddpm_future = None if args.skip_diffusers else pool.submit(run_ddpm_job)
        futures += [pool.submit(run_job, *job) for job in jobs[2:]]
        for fut in futures:
            rows.extend(fut.result())
        if pg_future is not None:
            pg = pg_future.result()
            print(f"PG table: largest |diff| = {max(r['abs_diff'] for r in pg):.4f}", flush=True)
        if ddpm_future is not None:
            ddpm = ddpm_future.result()
    (args.out / "samplers.json").write_text(
        json.dumps({"rows": rows + ddpm, "pierret_galerne": pg}, indent=1)
    )
    text = markdown(rows, pg, nfes)
    if not args.skip_diffusers:
        text += "\n" + ddpm_markdown(ddpm)
    (args.out / "samplers.md").write_text(text)
    plot(rows, args.out / "samplers_w2.png")
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
