"""Sinkhorn distance vs NFE for every sampler on trained models (the Gaussian benchmark's check).

The exact-W2 benchmark (``tools/bench_samplers.py``) uses the exact score of Gaussian data; here
the same samplers run on trained networks: the README toy (``configs/toy/gmm_vp_resnet.yaml``,
2-D Gaussian mixture, ResNet-MLP) and the digits U-Net (``configs/digits/vp_unet.yaml``, 8x8
images). For each checkpoint, every sampler of the benchmark's table on every grid of
``GRIDS`` draws ``--num_samples`` samples (one seeded generator per run) at NFE 5, 10, 20 and 50
(steps chosen so that the model calls made fit the budget), and the entropic OT cost (Sinkhorn,
diffkit's ``sinkhorn`` metric) to as many held-out samples is reported. Held-out data and the
metric come from ``diffkit.cli.sample_cmd`` (the run's saved ``config.yaml``), as ``diffkit
sample`` does.

Checkpoints: ``--toy PATH`` / ``--digits PATH``, or ``--fit`` trains them first with ``diffkit
fit`` (CSV logger; ``--digits-epochs`` shortens the digits run). Writes
``bench_trained_samplers.{json,md}`` (machine facts, one row per model x sampler x grid x NFE).

Usage: ``python tools/bench_trained_samplers.py --fit --out DIR`` (or ``--quick``: the toy model
only, two samplers, NFE 5 and 10, 200 samples; with ``--fit`` a 2-step toy run).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_samplers import SAMPLERS, Spec
from benchmark_report import add_common_arguments, write_report

from diffkit.cli.sample_cmd import compute_metrics, draw, held_out, load_module
from diffkit.metrics.wasserstein import Sinkhorn

ROOT = Path(__file__).resolve().parents[1]
NFES = [5, 10, 20, 50]
#: (grid, denoise_final): the library's default grid and the Karras grid.
GRIDS: list[tuple[str, bool]] = [("quadratic", False), ("karras", False)]
CONFIGS = {"toy": "configs/toy/gmm_vp_resnet.yaml", "digits": "configs/digits/vp_unet.yaml"}
#: Same-on-VP duplicates left out (gDDIM = DDIM on scalar SDEs, multistep gDDIM = DEIS tAB2).
SKIP = {"gddim", "gddim_lam1", "gddim_ms2"}


def fit(name: str, out: Path, epochs: int | None, max_steps: int | None = None) -> Path:
    """Train one config with ``diffkit fit`` (CSV logger under ``out``); return its
    ``last.ckpt``."""
    run_dir = out / f"run_{name}"
    cmd = [sys.executable, "-m", "diffkit", "fit", "-c", CONFIGS[name]]
    cmd += ["--trainer.logger=lightning.pytorch.loggers.CSVLogger"]
    cmd += [f"--trainer.logger.save_dir={run_dir}", f"--trainer.default_root_dir={run_dir}"]
    if epochs is not None:
        cmd.append(f"--trainer.max_epochs={epochs}")
    if max_steps is not None:
        cmd.append(f"--trainer.max_steps={max_steps}")
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"diffkit fit {name} failed:\n{proc.stderr[-3000:]}")
    print(f"trained {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return sorted(run_dir.rglob("last.ckpt"))[-1]


def steps_for(spec: Spec, nfe: int, grid: str, denoise: bool, sde) -> int:
    """The most steps whose model calls fit the budget (at least 1)."""
    steps = max(nfe - int(denoise), 1)
    while steps > 1 and spec.make(steps, grid, None, denoise).expected_nfe(sde) > nfe:
        steps -= 1
    return steps


def bench_model(
    name: str, ckpt: Path, n: int, samplers: list[str], nfes: list[int], seed: int
) -> list[dict]:
    """Rows of one checkpoint: every sampler x grid x NFE budget."""
    module = load_module(ckpt)
    ref = held_out(ckpt, None, n, seed)
    rows = []
    for sampler_name in samplers:
        spec = SAMPLERS[sampler_name]
        for grid, denoise in GRIDS:
            for nfe in nfes:
                t0 = time.perf_counter()
                try:
                    steps = steps_for(spec, nfe, grid, denoise, module.sde)
                    sampler = spec.make(steps, grid, None, denoise)
                    x, used, _ = draw(module, n, sampler=sampler, seed=seed, batch_size=n)
                    res = compute_metrics([Sinkhorn()], x, ref, module)["sinkhorn"]
                    value = res["value"] if torch.isfinite(x).all() else float("nan")
                except (ValueError, RuntimeError) as err:
                    steps, used, value = 0, -1, float("nan")
                    print(f"  {name}/{sampler_name}/{grid}/{nfe}: {err}", flush=True)
                rows.append(
                    {
                        "model": name,
                        "sampler": sampler_name,
                        "variant": spec.variant,
                        "order": spec.order,
                        "grid": grid + (" +denoise" if denoise else ""),
                        "steps": steps,
                        "nfe_budget": nfe,
                        "nfe": used,
                        "sinkhorn": value,
                        "seconds": time.perf_counter() - t0,
                    }
                )
        print(f"  {name}: {sampler_name} done", flush=True)
    return rows


def summary(rows: list[dict], nfes: list[int]) -> str:
    """Per model: each sampler's best grid per NFE, and the best sampler per NFE."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model and math.isfinite(r["sinkhorn"])]
        out += [f"### {model}: Sinkhorn (best grid) per NFE budget", ""]
        out.append("| sampler | " + " | ".join(str(n) for n in nfes) + " |")
        out.append("|---" * (len(nfes) + 1) + "|")
        for s in dict.fromkeys(r["sampler"] for r in mine):
            cells = []
            for n in nfes:
                c = [r for r in mine if r["sampler"] == s and r["nfe_budget"] == n]
                b = min(c, key=lambda r: r["sinkhorn"]) if c else None
                cells.append(f"{b['sinkhorn']:.3g} ({b['grid']}, {b['nfe']})" if b else "-")
            out.append(f"| {s} | " + " | ".join(cells) + " |")
        out.append("")
        for n in nfes:
            c = [r for r in mine if r["nfe_budget"] == n]
            if c:
                b = min(c, key=lambda r: r["sinkhorn"])
                out.append(
                    f"- NFE {n}: best {b['sinkhorn']:.4g} ({b['sampler']}, {b['grid']}, "
                    f"{b['nfe']} NFE)"
                )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--toy", type=Path, default=None, help="toy checkpoint (.ckpt)")
    parser.add_argument("--digits", type=Path, default=None, help="digits checkpoint (.ckpt)")
    parser.add_argument("--fit", action="store_true", help="train the missing checkpoints first")
    parser.add_argument("--digits-epochs", type=int, default=None, help="shorter digits training")
    parser.add_argument("--num_samples", type=int, default=2000, help="samples per run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--samplers",
        type=str,
        default="",
        help="comma-separated sampler rows of bench_samplers.SAMPLERS (default: all)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ckpts = {"toy": args.toy, "digits": args.digits}
    samplers = [s for s in SAMPLERS if s not in SKIP]
    if args.samplers:
        samplers = args.samplers.split(",")
        unknown = [s for s in samplers if s not in SAMPLERS]
        if unknown:
            parser.error(f"--samplers: unknown {unknown}; choose from {', '.join(SAMPLERS)}")
    nfes, n = NFES, args.num_samples
    if args.quick:
        ckpts = {"toy": args.toy}
        samplers, nfes, n = ["ddim", "deis_tab2"], [5, 10], 200
    epochs = {"toy": None, "digits": args.digits_epochs}
    rows = []
    for name, ckpt in ckpts.items():
        if ckpt is None and args.fit:
            ckpt = fit(name, args.out, epochs[name], 2 if args.quick else None)
        if ckpt is None:
            print(f"no checkpoint for {name}: give --{name} PATH or --fit", flush=True)
            continue
        rows += bench_model(name, ckpt, n, samplers, nfes, args.seed)
    wall = time.perf_counter() - t0
    write_report(
        "bench_trained_samplers",
        args.out,
        title="Samplers on trained models: Sinkhorn to held-out data vs NFE",
        rows=rows,
        columns=["model", "sampler", "variant", "grid", "nfe_budget", "nfe", "sinkhorn"],
        settings={"num_samples": n, "seed": args.seed, "nfes": nfes, "wall_s": round(wall)},
        extra_md=summary(rows, nfes),
        notes=[
            "Sinkhorn: diffkit's `sinkhorn` metric (entropic OT cost) between the samples and as "
            "many held-out samples of the run's datamodule; one seeded generator per run.",
            "Steps per run: the most whose model calls fit the NFE budget (Heun: 2 per step).",
        ],
    )
    print(f"wrote {args.out} in {wall:.0f} s")


if __name__ == "__main__":
    main()
