"""Sampling throughput: diffkit's DDIM, DEIS, gDDIM, DPM-Solver++ vs a bare loop and diffusers.

For each model and NFE, three implementations drive **the same network object** from the same
initial noise:

* ``diffkit``: ``Sampler.sample(score_model, sde, shape, u_T=...)`` with the registered sampler
  (plan cached after a warm-up call, as in real use), the score model being diffkit's
  ``Parameterization`` (eps target) around the network.
* ``bare``: a Python loop with the same number of network calls, the same conditioning tensors
  and the same multistep combination, with every coefficient precomputed as Python floats
  (DDIM closed form; tAB-DEIS coefficients by Gauss-Legendre quadrature in rho; DPM-Solver++(2M)
  on data predictions ``(x - sigma eps) / alpha``; all computed here independently of diffkit).
  The maximum deviation between the two outputs is reported as a check that both do the same
  work.
* ``diffusers`` (if importable): ``DDIMScheduler`` / ``DEISMultistepScheduler`` /
  ``DPMSolverMultistepScheduler`` with
  ``set_timesteps`` + ``step`` per call (how a diffusers pipeline runs).

All three run on one schedule and one grid: DDPM's discrete linear-beta schedule (diffkit's
``VPSDE(schedule="ddpm")``, whose kernel at ``t = (i + 1) / 1000`` is diffusers'
``alphas_cumprod[i]``) and diffusers' timesteps (diffkit's sampler gets them as its grid, ending
at ``t = 0``). The network is conditioned on the DDPM timestep index, as diffusers passes it.
So DDIM and gDDIM follow one trajectory in all three loops (``max_abs_diff_vs_diffusers`` ~1e-4,
float32), and the network does the same work in each, which matters because its cost depends
on its input values (up to ~30% measured between inputs); diffusers' DEIS (log-rho variant)
differs from diffkit's tAB-DEIS, so its trajectory is close but not equal.

Implementations are interleaved round by round; the ratios ``diffkit / bare`` (goal <= 1.05)
and ``diffkit / diffusers`` (goal < 1) are medians of per-round ratios, with their standard
errors. A separate section measures the peak memory of one sampling call per implementation in
a fresh subprocess: the bare loop, diffkit, and diffkit with ``record_trajectory=True``.

    python tools/bench_sampling.py [--out bench_out] [--rounds N] [--no-memory] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from benchmark_report import (
    Goal,
    add_common_arguments,
    markdown_table,
    median,
    median_se,
    write_report,
)
from torch import Tensor

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.registry import DENOISERS
from diffkit.registry import SAMPLERS as SAMPLER_REGISTRY
from diffkit.sdes.vp import VPSDE

SAMPLERS = ("ddim", "deis", "gddim", "dpm_solver")


# ---------------------------------------------------------------------------- diffkit parts
#: Settings of each compared sampler besides ``steps`` (deterministic, no final denoising).
SAMPLER_KWARGS: dict[str, dict[str, Any]] = {
    "ddim": {"eta": 0.0},
    "deis": {"order": 3},
    "gddim": {"lam": 0.0},
    "dpm_solver": {"order": 2},
}


def make_sampler(name: str, nfe: int) -> Any:
    return SAMPLER_REGISTRY.get(name)(steps=nfe, denoise_final=False, **SAMPLER_KWARGS[name])


def make_score_model(sde: VPSDE, net: torch.nn.Module) -> tuple[Callable, str]:
    return Parameterization(sde, net, target="eps").eval(), "Parameterization"


def randomize_zero_parameters(net: torch.nn.Module) -> torch.nn.Module:
    """Zero-initialised output layers would make every eps 0 and the output check vacuous."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.is_floating_point() and not bool(p.any()):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    return net


def make_net(model: str, quick: bool) -> tuple[torch.nn.Module, tuple[int, ...], int]:
    """The network (eval mode, no zero layers), one datum's shape and the batch size."""
    net, shape, batch = _make_net(model, quick)
    return randomize_zero_parameters(net).eval(), shape, batch


def _make_net(model: str, quick: bool) -> tuple[torch.nn.Module, tuple[int, ...], int]:
    if model in ("resnet", "resnet_b64"):
        cls = DENOISERS.get("resnet")
        spec = DenoiserSpec((2,), (2,), (2,))
        width = 64 if quick else 256
        batch = 64 if quick or model == "resnet_b64" else 512
        return cls(spec, width=width, depth=2 if quick else 4).eval(), (2,), batch
    spec = DenoiserSpec((3, 32, 32), (3, 32, 32), (3, 32, 32))
    net = DENOISERS.get("unet")(
        spec, channels=32, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=()
    )
    return net.eval(), (3, 32, 32), 2 if quick else 4


# ---------------------------------------------------------------------------- bare loop
def gauss_legendre(f: Callable[[np.ndarray], np.ndarray], a: float, b: float, n: int = 24):
    x, w = np.polynomial.legendre.leggauss(n)
    mid, half = 0.5 * (a + b), 0.5 * (b - a)
    return float(half * np.sum(w * f(mid + half * x)))


def vp_coefficients(sde: VPSDE, times: np.ndarray, values: int) -> list[tuple[float, list[float]]]:
    """Per step ``i`` (``t_i -> t_{i+1}``, decreasing): ``(psi, [c_0, ..., c_q])`` with
    ``x' = psi x + sum_j c_j eps_{i-j}``: tAB-DEIS with up to ``values`` eps values (``values=1``
    is DDIM), ``C_j = alpha(t') int_{rho(t)}^{rho(t')} l_j(t(rho)) drho`` [DEIS, 2204.13902]."""
    tt = torch.as_tensor(times, dtype=torch.float64)
    alpha = sde.alpha(tt).numpy()
    rho = sde.noise_level(tt).numpy()

    def t_of_rho(r: np.ndarray) -> np.ndarray:
        return sde.t_from_noise_level(torch.as_tensor(r, dtype=torch.float64)).numpy()

    out = []
    for i in range(len(times) - 1):
        q = min(values - 1, i)
        nodes = [times[i - j] for j in range(q + 1)]  # current and q earlier (larger t)
        cs = []
        for j in range(q + 1):

            def lag(r: np.ndarray, j: int = j, nodes: list[float] = nodes) -> np.ndarray:
                t = t_of_rho(r)
                val = np.ones_like(t)
                for k, tk in enumerate(nodes):
                    if k != j:
                        val = val * (t - tk) / (nodes[j] - tk)
                return val

            cs.append(alpha[i + 1] * gauss_legendre(lag, rho[i], rho[i + 1]))
        out.append((float(alpha[i + 1] / alpha[i]), [float(c) for c in cs]))
    return out


def dpm_solver_coefficients(sde: VPSDE, times: np.ndarray) -> list[tuple]:
    """Per step ``i``: ``(1 / alpha_i, sigma_i, psi, [c_0, c_1])`` of DPM-Solver++(2M), midpoint
    form, diffusers' lower-order rule (first order at the first step, and at the last one when
    it ends at zero noise or the grid has fewer than 15 steps) [DPM-Solver++, 2211.01095]:
    ``D_i = (x_i - sigma_i eps_i) / alpha_i`` and ``x' = psi x + c_0 D_i + c_1 D_{i-1}``."""
    tt = torch.as_tensor(times, dtype=torch.float64)
    alpha, sigma = sde.alpha(tt).numpy(), sde.sigma(tt).numpy()
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)
    n = len(times) - 1
    out = []
    for i in range(n):
        h = lam[i + 1] - lam[i]
        m0 = alpha[i + 1] * -np.expm1(-h)
        first = i == 0 or (i == n - 1 and (sigma[n] == 0 or n < 15))
        if first:
            cs = [m0]
        else:
            r0 = (lam[i] - lam[i - 1]) / h
            cs = [m0 * (1 + 0.5 / r0), -m0 * 0.5 / r0]
        out.append((1 / alpha[i], sigma[i], sigma[i + 1] / sigma[i], [float(c) for c in cs]))
    return out


def bare_loop_x0(
    net: torch.nn.Module, x: Tensor, conds: list[Tensor], cins: list[float], coefs
) -> Tensor:
    """:func:`bare_loop` on data predictions ``D = (x - sigma eps) / alpha`` (DPM-Solver++)."""
    hist: list[Tensor] = []
    with torch.no_grad():
        for c, cin, (inv_a, sig, psi, cs) in zip(conds, cins, coefs, strict=False):
            hist.insert(0, (x - net(x * cin, c) * sig) * inv_a)
            del hist[len(cs) :]
            x = x * psi
            for cj, d in zip(cs, hist, strict=False):
                x = x.add(d, alpha=cj)
    return x


def input_scales(sde: VPSDE, times: np.ndarray, score_model: Any) -> list[float]:
    """``c_in`` per grid time, as Parameterization applies it (1 when it does not)."""
    if not getattr(score_model, "input_scaling", False):
        return [1.0] * len(times)
    sd = float(score_model.sigma_data)
    tt = torch.as_tensor(times, dtype=torch.float64)
    a, s = sde.alpha(tt), sde.sigma(tt)
    return [float(v) for v in (sd**2 * a**2 + s**2).rsqrt()]


def bare_loop(
    net: torch.nn.Module, x: Tensor, conds: list[Tensor], cins: list[float], coefs
) -> Tensor:
    """The same network calls and multistep sums with precomputed Python-float coefficients."""
    hist: list[Tensor] = []
    with torch.no_grad():
        for c, cin, (psi, cs) in zip(conds, cins, coefs, strict=False):
            hist.insert(0, net(x * cin, c))
            del hist[len(cs) :]
            x = x * psi
            for cj, eps in zip(cs, hist, strict=False):
                x = x.add(eps, alpha=cj)
    return x


# ---------------------------------------------------------------------------- diffusers
def diffusers_scheduler(name: str, nfe: int) -> tuple[Any, str] | None:
    """diffusers' scheduler for ``name`` with ``nfe`` timesteps set (``None`` without diffusers)."""
    try:
        import diffusers
    except ImportError:
        return None
    common = {"num_train_timesteps": 1000, "beta_schedule": "linear"}
    if name == "dpm_solver":
        sched = diffusers.DPMSolverMultistepScheduler(**common, solver_order=2)
        label = "DPMSolverMultistepScheduler(solver_order=2)"
    elif name == "deis":
        sched = diffusers.DEISMultistepScheduler(
            **common, solver_order=3, algorithm_type="deis", solver_type="logrho"
        )
        label = "DEISMultistepScheduler(solver_order=3)"
    else:  # ddim, and gddim, which is DDIM on VP
        sched = diffusers.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)
        label = "DDIMScheduler(eta=0)"
    sched.set_timesteps(nfe)
    return sched, f"{label}, diffusers {diffusers.__version__}"


def diffusers_grid(sched: Any) -> Tensor:
    """diffusers' timesteps as diffkit times ``t = (index + 1) / 1000``, ending at ``t = 0``
    (both schedulers' last step goes to ``alpha_bar = 1``), float64 ``(nfe + 1,)``."""
    idx = torch.as_tensor(sched.timesteps, dtype=torch.float64)
    return torch.cat([(idx + 1) / 1000.0, torch.zeros(1, dtype=torch.float64)])


def diffusers_loop_factory(
    sched: Any, nfe: int, net: torch.nn.Module, x_T: Tensor, conds, cins
) -> Callable[[], Tensor]:
    """A closure running diffusers' scheduler loop as a pipeline does (``set_timesteps`` then
    ``step`` per model call), feeding the network the conditioning tensors ``conds`` and input
    scales ``cins`` of the same grid (the DDPM timestep index, as diffusers passes it)."""

    def run() -> Tensor:
        sched.set_timesteps(nfe)
        x = x_T
        with torch.no_grad():
            for t, c, cin in zip(sched.timesteps, conds, cins, strict=False):
                x = sched.step(net(x * cin, c), t, x).prev_sample
        return x

    return run


# ---------------------------------------------------------------------------- driver
def bench_one(
    model_name: str, sampler_name: str, nfe: int, rounds: int, quick: bool, nets: dict
) -> dict[str, Any] | None:
    net, data_shape, batch = nets[model_name]
    # DDPM's discrete schedule (linear betas 1e-4..0.02, N = 1000): diffkit's kernel at
    # t = (i + 1) / N is diffusers' alphas_cumprod[i], and every loop runs on diffusers' grid,
    # so all three follow the same trajectory and the network does the same work in each (its
    # cost depends on its input values).
    sde = VPSDE(schedule="ddpm")
    sampler = make_sampler(sampler_name, nfe)
    score_model, param_kind = make_score_model(sde, net)
    gen = torch.Generator().manual_seed(0)
    x_T = torch.randn((batch, *data_shape), generator=gen)
    made = diffusers_scheduler(sampler_name, nfe)
    if made is not None:
        grid = diffusers_grid(made[0])
        sampler.times = lambda sde, grid=grid: grid  # diffkit's sampler on diffusers' grid

    plan = sampler.plan(sde)
    times = plan.times.numpy()
    values = 1
    if sampler_name == "deis":
        values = int(getattr(sampler, "order", 3)) + 1
    elif sampler_name == "gddim":
        values = int(getattr(sampler, "order", 0)) + 1
    coefs = vp_coefficients(sde, times, values)
    loop = bare_loop
    if sampler_name == "dpm_solver":
        values, coefs, loop = 2, dpm_solver_coefficients(sde, times), bare_loop_x0
    conds = [
        sde.noise_condition(torch.full((batch,), float(t), dtype=torch.float64)).float()
        for t in times[:-1]
    ]
    cins = input_scales(sde, times, score_model)

    def run_diffkit() -> Tensor:
        return sampler.sample(score_model, sde, (batch, *data_shape), u_T=x_T).x

    def run_bare() -> Tensor:
        return loop(net, x_T, conds, cins, coefs)

    impls: dict[str, Callable[[], Tensor]] = {"diffkit": run_diffkit, "bare": run_bare}
    dif_label = None
    if made is not None:
        impls["diffusers"] = diffusers_loop_factory(made[0], nfe, net, x_T, conds, cins)
        dif_label = made[1]

    res = sampler.sample(score_model, sde, (batch, *data_shape), u_T=x_T)  # warm-up: plan
    outs = {k: f() for k, f in impls.items() if k != "diffkit"}  # warm-up, also the check
    outs["diffkit"] = res.x
    wall: dict[str, list[float]] = {k: [] for k in impls}
    cpu: dict[str, list[float]] = {k: [] for k in impls}
    orders = list(itertools.permutations(impls))
    for r in range(rounds):
        # Every order of the implementations in turn: each runs first, last and after each
        # other one equally often over a multiple of len(impls)! rounds.
        names = orders[r % len(orders)]
        for k in names:
            w0, c0 = time.perf_counter(), time.process_time()
            impls[k]()
            cpu[k].append(time.process_time() - c0)
            wall[k].append(time.perf_counter() - w0)
    med = {k: median(v) for k, v in wall.items()}
    mcpu = {k: median(v) for k, v in cpu.items()}
    has_dif = "diffusers" in med

    def paired(times: dict[str, list[float]], a: str, b: str) -> tuple[float, float]:
        """Median and standard error of the per-round ratios a / b (same round, same load)."""
        ratios = [x / y for x, y in zip(times[a], times[b], strict=True)]
        return median(ratios), median_se(ratios)

    def overhead_ms(k: str) -> float:
        """Median per-round CPU time of ``k`` minus the bare loop's, per step (ms)."""
        return 1e3 * median(x - y for x, y in zip(cpu[k], cpu["bare"], strict=True)) / nfe

    cpu_bare, cpu_bare_se = paired(cpu, "diffkit", "bare")
    cpu_dif, cpu_dif_se = paired(cpu, "diffkit", "diffusers") if has_dif else (None, None)
    row: dict[str, Any] = {
        "model": model_name,
        "batch": batch,
        "sampler": sampler_name,
        "nfe": nfe,
        "rounds": rounds,
        "diffkit_nfe": res.nfe,
        "diffkit_sps": batch / med["diffkit"],
        "bare_sps": batch / med["bare"],
        "diffusers_sps": batch / med["diffusers"] if has_dif else None,
        "ratio_vs_bare": paired(wall, "diffkit", "bare")[0],
        "ratio_vs_diffusers": paired(wall, "diffkit", "diffusers")[0] if has_dif else None,
        "cpu_ratio_vs_bare": cpu_bare,
        "cpu_ratio_vs_bare_se": cpu_bare_se,
        "cpu_ratio_vs_diffusers": cpu_dif,
        "cpu_ratio_vs_diffusers_se": cpu_dif_se,
        "overhead_ms_per_step": overhead_ms("diffkit"),
        "diffusers_overhead_ms_per_step": overhead_ms("diffusers") if has_dif else None,
        "max_abs_diff_vs_bare": float((outs["diffkit"] - outs["bare"]).abs().max()),
        "output_scale": float(outs["bare"].abs().max()),
        "max_abs_diff_vs_diffusers": (
            float((outs["diffkit"] - outs["diffusers"]).abs().max()) if has_dif else None
        ),
        "bare_eps_values": values,
        "score_model": param_kind,
        "diffusers_loop": dif_label,
        "sampler_repr": f"{type(sampler).__name__}(grid={getattr(sampler, 'grid', '?')})",
        "median_wall_s": med,
        "median_cpu_s": mcpu,
    }
    return row


# ---------------------------------------------------------------------------- memory
MEMORY_IMPLS = ("bare", "diffkit", "diffkit+trajectory")
# A fixed glibc mmap threshold: tensors above 64 KiB are mmapped and returned on free, so the
# peak RSS follows live tensor memory. With glibc's default (dynamic) threshold, freed blocks
# stay in the heap and small live allocations between them decide how much of it is trimmed,
# so peak RSS differences of +-100 MB appear between runs doing identical work.
MEMORY_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """One sampling call in this (fresh) process; peak RSS growth over the RSS just before it.

    The kernel's high-water mark is reset first (``/proc/self/clear_refs``), so the peak is the
    sampling call's own, not the imports'.
    """
    import gc

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    net, shape, _ = make_net(cfg["model"], cfg["quick"])
    batch, nfe, impl = cfg["batch"], cfg["nfe"], cfg["impl"]
    sde = VPSDE()
    sampler = make_sampler("ddim", nfe)
    score_model, _ = make_score_model(sde, net)
    x_T = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(0))
    times = sampler.plan(sde).times.numpy()
    coefs = vp_coefficients(sde, times, 1)
    conds = [
        sde.noise_condition(torch.full((batch,), float(t), dtype=torch.float64)).float()
        for t in times[:-1]
    ]
    cins = input_scales(sde, times, score_model)
    record = impl == "diffkit+trajectory"

    def run() -> Tensor:
        if impl == "bare":
            return bare_loop(net, x_T, conds, cins, coefs)
        return sampler.sample(score_model, sde, x_T.shape, u_T=x_T, record_trajectory=record).x

    run()  # warm-up: plan and per-grid tables are built once, as in repeated use
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_mb("VmRSS")
    out = run()
    peak = _status_mb("VmHWM")
    state_mb = out.numel() * out.element_size() / 2**20
    return {
        "model": cfg["model"],
        "batch": batch,
        "nfe": nfe,
        "impl": impl,
        "rss_before_mb": before,
        "peak_growth_mb": peak - before,
        "state_mb": state_mb,
        "trajectory_mb": state_mb * (nfe + 1) if impl == "diffkit+trajectory" else 0.0,
    }


def memory_rows(quick: bool) -> list[dict[str, Any]]:
    """Peak-memory rows, one fresh subprocess per (model, implementation)."""
    import json
    import subprocess

    configs = [("resnet", 64 if quick else 8192), ("unet", 2 if quick else 8)]
    rows = []
    for model, batch in configs:
        for impl in MEMORY_IMPLS:
            cfg = {"model": model, "batch": batch, "nfe": 10 if quick else 50, "impl": impl}
            cfg["quick"] = quick
            proc = subprocess.run(
                [sys.executable, __file__, "--memory-worker", json.dumps(cfg)],
                capture_output=True,
                text=True,
                env=os.environ | MEMORY_ENV,
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@")]
            if lines:
                rows.append(json.loads(lines[-1][2:]))
            else:
                tail = (proc.stderr or proc.stdout).strip().splitlines()
                rows.append(cfg | {"error": tail[-1] if tail else f"exit {proc.returncode}"})
    return rows


def profile_diffkit(nets: dict, sampler_name: str, nfe: int, top: int = 12) -> str:
    net, data_shape, batch = nets["resnet"]
    sde = VPSDE()
    sampler = make_sampler(sampler_name, nfe)
    score_model, _ = make_score_model(sde, net)
    x_T = torch.randn((batch, *data_shape), generator=torch.Generator().manual_seed(0))
    sampler.sample(score_model, sde, (batch, *data_shape), u_T=x_T)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(3):
        sampler.sample(score_model, sde, (batch, *data_shape), u_T=x_T)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    start = text.find("ncalls")
    return text[start:] if start >= 0 else text


def main(argv: list[str] | None = None) -> int:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="timed calls per implementation (default: resnet 12, resnet_b64 18, unet 6)",
    )
    parser.add_argument(
        "--models",
        default="resnet,resnet_b64,unet",
        help="comma list: resnet (batch 512), resnet_b64 (batch 64: overhead-bound), unet",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        import json

        print("@@" + json.dumps(memory_worker(json.loads(args.memory_worker))), flush=True)
        return 0
    torch.set_num_threads(args.threads)
    # Denormal floats (e.g. SiLU of very negative inputs) make a network's cost depend on its
    # values: the three loops follow different trajectories (diffusers' scheduler its own), so
    # flush them to zero; measured ~6% of a ResNet-512 DDIM call, unevenly between loops.
    denormals_flushed = torch.set_flush_denormal(True)
    torch.manual_seed(0)

    def rounds_for(model: str) -> int:
        if args.quick:
            return 1
        return args.rounds or {"resnet": 12, "resnet_b64": 18, "unet": 6}.get(model, 6)

    nfes = (10,) if args.quick else (10, 50)
    models = ["resnet"] if args.quick else args.models.split(",")
    nets: dict[str, Any] = {}
    notes: list[str] = []
    for m in models:
        try:
            nets[m] = make_net(m, args.quick)
        except Exception as exc:
            notes.append(f"model {m!r} skipped: {exc}")
    rows = []
    for m in nets:
        for s in SAMPLERS:
            for n in nfes:
                row = bench_one(m, s, n, rounds_for(m), args.quick, nets)
                if row is not None:
                    rows.append(row)
                    print({k: v for k, v in row.items() if not k.startswith("median")}, flush=True)

    goals = []
    for r in rows:
        if "error" in r:
            continue
        tag = f"{r['model']} {r['sampler']} NFE {r['nfe']}"
        wall = f"wall-clock ratio {r['ratio_vs_bare']:.3f}"
        goals.append(
            Goal(
                f"{tag}: diffkit / bare (CPU time)",
                r["cpu_ratio_vs_bare"],
                1.05,
                note=wall,
                noise=r["cpu_ratio_vs_bare_se"],
            )
        )
        if r.get("cpu_ratio_vs_diffusers") is not None:
            note = (
                f"wall-clock ratio {r['ratio_vs_diffusers']:.3f}; overhead per step over the "
                f"bare loop: diffkit {1e3 * r['overhead_ms_per_step']:.0f} us, diffusers "
                f"{1e3 * r['diffusers_overhead_ms_per_step']:.0f} us"
            )
            goals.append(
                Goal(
                    f"{tag}: diffkit / diffusers (CPU time)",
                    r["cpu_ratio_vs_diffusers"],
                    1.0,
                    note=note,
                    noise=r["cpu_ratio_vs_diffusers_se"],
                )
            )
    prof = "" if args.quick or "resnet" not in nets else profile_diffkit(nets, "deis", 50)
    extra_md = ""
    if prof:
        extra_md = (
            "cProfile of diffkit DEIS, NFE 50, resnet (3 calls, by own time):\n\n```\n"
            + "\n".join(prof.splitlines()[:20])
            + "\n```"
        )
    mem = [] if args.no_memory else memory_rows(args.quick)
    for model in dict.fromkeys(r["model"] for r in mem):
        by = {r["impl"]: r for r in mem if r["model"] == model and "error" not in r}
        if {"bare", "diffkit", "diffkit+trajectory"} <= set(by):
            kept = by["diffkit+trajectory"]["peak_growth_mb"] - by["bare"]["peak_growth_mb"]
            extra = by["diffkit"]["peak_growth_mb"] - by["bare"]["peak_growth_mb"]
            goals.append(
                Goal(
                    f"{model} batch {by['bare']['batch']}: diffkit's extra peak memory over the "
                    "bare loop / that of keeping the trajectory",
                    extra / kept if kept > 0 else float("nan"),
                    0.5,
                    note=f"extra {extra:+.2f} MB; trajectory {kept:+.2f} MB "
                    f"({by['diffkit+trajectory']['trajectory_mb']:.2f} MB of states)",
                )
            )
    if mem:
        extra_md += (
            "\n\nPeak memory of one DDIM sampling call (fresh subprocess per row; growth of the "
            "peak RSS over the RSS just before the call):\n\n"
            + markdown_table(
                mem,
                [
                    "model",
                    "batch",
                    "nfe",
                    "impl",
                    "peak_growth_mb",
                    "state_mb",
                    "trajectory_mb",
                    "error",
                ],
            )
        )
    notes += [
        "sps = samples per second (batch / median wall time of one sampling call). ratio_* "
        "are time ratios (diffkit / other; < 1 means diffkit is faster): the median over rounds "
        "of the ratio within each round (both ran back to back under the same load), by wall "
        "clock; cpu_ratio_* the same by process CPU time, which other jobs on the machine "
        "disturb less; the goals are checked on the CPU-time ratios, with the standard error of "
        "that median (noise; 1.2533 x 1.4826 MAD / sqrt(rounds)): a value above its limit by "
        "less than two standard errors is 'within noise'. overhead_ms_per_step = median over "
        "rounds of (diffkit CPU time - bare CPU time) / NFE; diffusers_overhead_ms_per_step "
        "the same for diffusers' scheduler loop.",
        "All three loops call the same network object on one schedule (DDPM, linear betas) and "
        "one grid (diffusers' timesteps, ending at t = 0), with the same conditioning tensors; "
        "max_abs_diff_vs_bare checks that diffkit's output equals the bare loop's (0, or "
        "float32 rounding); max_abs_diff_vs_diffusers that diffusers' DDIM follows the same "
        "trajectory (its DEIS is the log-rho variant, so it differs there; the outputs are "
        "those of an untrained network, whose last step to t = 0 amplifies differences).",
        "diffusers has no gDDIM; on VP, deterministic gDDIM is DDIM, so it is compared with "
        "DDIMScheduler. diffusers' DEIS uses 3 eps values (solver_order=3, log-rho variant).",
        "Implementations are interleaved round by round; absolute numbers are noisy on a shared "
        "2-core machine, the ratios are measured side by side.",
    ]
    write_report(
        "bench_sampling",
        args.out,
        title="Sampling throughput (samples/s, CPU)",
        rows=rows,
        columns=[
            "model",
            "batch",
            "sampler",
            "nfe",
            "diffkit_nfe",
            "diffkit_sps",
            "bare_sps",
            "diffusers_sps",
            "ratio_vs_bare",
            "ratio_vs_diffusers",
            "cpu_ratio_vs_bare",
            "cpu_ratio_vs_diffusers",
            "overhead_ms_per_step",
            "diffusers_overhead_ms_per_step",
            "max_abs_diff_vs_bare",
            "max_abs_diff_vs_diffusers",
        ],
        goals=goals,
        notes=notes,
        settings={
            "rounds": ", ".join(f"{m} {rounds_for(m)}" for m in nets),
            "threads": args.threads,
            "flush_denormal": denormals_flushed,
            "sde": "vp (linear beta 0.1..20)",
        },
        extra_md=extra_md,
        extra={"memory": mem},
    )
    print((args.out / "bench_sampling.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
