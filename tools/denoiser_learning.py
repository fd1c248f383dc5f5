"""Does each denoiser learn through ``diffkit fit``? Sinkhorn to held-out data before and after.

For every case (a shipped config under ``configs/denoisers/`` plus command-line overrides) this
builds the run exactly as ``diffkit fit -c CONFIG ...`` does (in-process :class:`DiffkitCLI`,
logger and checkpointing off, a wall-time budget through ``--trainer.max_time``), then

- draws ``n`` samples from the *initialised* module (measurement sampler, seed 0),
- trains (``trainer.fit``, the ``fit`` subcommand's call), timing it,
- draws ``n`` samples again (same sampler, same seed),

and reports the entropic OT cost (:class:`diffkit.metrics.wasserstein.Sinkhorn`, default settings
for every case) of both sample sets to ``n`` held-out points ``A``, and the noise floor
``Sinkhorn(A, B)`` between two disjoint held-out draws ``A``, ``B`` of the same size (one call of
``reference_samples(2 n)`` split in halves). The measurement sampler is stochastic for every case
(Euler-Maruyama for vectors, DDIM with ``eta = 1`` i.e. DDPM-ancestral for images): deterministic
samplers amplify eps errors at high noise under VP's ``beta_max = 20`` (see README).

    python tools/denoiser_learning.py --out bench_out [--budget 40] [--cases resnet_gmm2 ...]
    python tools/denoiser_learning.py --quick   # seconds: tiny budget and sample counts

Writes ``OUT/denoiser_learning.json`` and ``OUT/denoiser_learning.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "denoisers"


@dataclass
class Case:
    """One measured run: a config, overrides, the sample count and the measurement sampler."""

    name: str
    denoiser: str
    data: str
    config: str
    overrides: list[str] = field(default_factory=list)
    images: bool = False
    needs_image_folder: bool = False


CASES: list[Case] = [
    Case("resnet_gmm2", "resnet", "GMM 2-D (diamond, 9 comp.)", "resnet_gmm.yaml"),
    Case(
        "tensor_train_gmm2", "tensor_train", "GMM 2-D (diamond, 9 comp.)", "tensor_train_gmm.yaml"
    ),
    Case("resnet_gmm8", "resnet", "GMM 8-D (8 random comp., std 0.1)", "resnet_gmm8.yaml"),
    Case(
        "tensor_train_gmm8",
        "tensor_train",
        "GMM 8-D (8 random comp., std 0.1)",
        "tensor_train_gmm8.yaml",
    ),
    Case("resnet_moons", "resnet", "moons (toy2d)", "resnet_moons.yaml"),
    Case("tensor_train_moons", "tensor_train", "moons (toy2d)", "tensor_train_moons.yaml"),
    Case("unet_digits", "unet_small", "sklearn digits 1x8x8", "unet_digits.yaml", images=True),
    Case(
        "unet_shapes",
        "unet_small",
        "generated shapes 3x32x32 (600 PNGs)",
        "unet_images.yaml",
        images=True,
        needs_image_folder=True,
    ),
    Case(
        "unet_shapes16",
        "unet_small",
        "generated shapes, resized to 3x16x16",
        "unet_images.yaml",
        overrides=["--data.image_size", "16"],
        images=True,
        needs_image_folder=True,
    ),
]


def write_shapes(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """``count`` PNGs of one filled disc or square of a random colour, position and size on a
    dark background, in two class folders (``disc/``, ``square/``)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    for kind in ("disc", "square"):
        (root / kind).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = ("disc", "square")[i % 2]
        r = rng.uniform(0.15, 0.3) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        if kind == "disc":
            mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        else:
            mask = (np.abs(xx - cx) <= r) & (np.abs(yy - cy) <= r)
        colour = rng.integers(64, 256, size=3)
        img = np.full((size, size, 3), 16, dtype=np.uint8)
        img[mask] = colour
        Image.fromarray(img).save(root / kind / f"{i:04d}.png")
    return root


def measurement_sampler(images: bool, quick: bool):
    """Stochastic samplers: DDPM-ancestral (DDIM, eta 1) for images, Euler-Maruyama otherwise."""
    from diffkit.samplers.ddim import DDIM
    from diffkit.samplers.euler_maruyama import EulerMaruyama

    if images:
        return DDIM(steps=10 if quick else 50, eta=1.0)
    return EulerMaruyama(steps=20 if quick else 200)


def sinkhorn(x: torch.Tensor, y: torch.Tensor) -> float:
    from diffkit.metrics.wasserstein import Sinkhorn

    metric = Sinkhorn()
    metric.update(x.flatten(1).double(), y.flatten(1).double())
    out = metric.compute()
    value = out["value"] if isinstance(out, dict) else out
    return float(torch.as_tensor(value).double().mean())


def run_case(case: Case, *, budget: float, n: int, quick: bool, workdir: Path) -> dict:
    from diffkit.cli.lightning_cli import DiffkitCLI
    from diffkit.cli.sample_cmd import draw

    overrides = list(case.overrides)
    if case.needs_image_folder:
        root = write_shapes(workdir / "shapes", 120 if quick else 600)
        overrides += ["--data.root", str(root)]
        if quick:
            overrides += ["--data.num_test", "40", "--data.num_val", "8"]
        else:
            overrides += ["--data.num_test", "256"]
    args = [  # the options of `diffkit fit`; run=False parses without the subcommand
        "-c",
        str(CONFIGS / case.config),
        *overrides,
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.default_root_dir",
        str(workdir / case.name),
        "--trainer.max_epochs",
        "1" if quick else "100000",
        "--trainer.max_time",
        time.strftime("00:%H:%M:%S", time.gmtime(max(1, int(budget)))),
        "--trainer.num_sanity_val_steps",
        "0",
    ]
    if quick:
        args += ["--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]
    torch.manual_seed(0)
    cli = DiffkitCLI(args=args, run=False)
    module, dm = cli.model, cli.datamodule
    sampler = measurement_sampler(case.images, quick)
    ref = dm.reference_samples(2 * n, generator=torch.Generator().manual_seed(1)).float()
    ref_a, ref_b = ref[:n], ref[n:]

    module.eval()
    x0, nfe0, t_before = draw(module, n, sampler=sampler, seed=0)
    before = sinkhorn(x0, ref_a)

    module.train()
    start = time.perf_counter()
    cli.trainer.fit(module, datamodule=dm)
    train_seconds = time.perf_counter() - start
    steps = int(cli.trainer.global_step)
    epochs = int(cli.trainer.current_epoch)

    module.eval()
    x1, nfe1, t_after = draw(module, n, sampler=sampler, seed=0)
    after = sinkhorn(x1, ref_a)
    floor = sinkhorn(ref_b, ref_a)
    # scale reference: the SDE's prior (standard normal for VP), i.e. no learned structure at all
    prior = module.sde.prior_sample((n, *dm.data_shape), generator=torch.Generator().manual_seed(2))
    prior_cost = sinkhorn(module.sde.project(prior).float(), ref_a)
    params = sum(p.numel() for p in module.net.parameters())
    finite = bool(torch.isfinite(x1).all())
    return {
        "case": case.name,
        "denoiser": case.denoiser,
        "data": case.data,
        "config": f"configs/denoisers/{case.config}",
        "overrides": overrides,
        "data_shape": list(dm.data_shape),
        "parameters": params,
        "sampler": f"{type(sampler).__name__}({sampler_options(sampler)})",
        "n": n,
        "sinkhorn_before": before,
        "sinkhorn_after": after,
        "sinkhorn_floor": floor,
        "sinkhorn_prior": prior_cost,
        "ratio_before_after": before / after if after > 0 else float("inf"),
        "after_over_floor": after / floor if floor > 0 else float("inf"),
        "finite": finite,
        "sample_std_after": float(x1.double().std()),
        "sample_absmax_after": float(x1.double().abs().max()),
        "data_std": float(ref_a.double().std()),
        "train_seconds": train_seconds,
        "train_steps": steps,
        "train_epochs": epochs,
        "sample_seconds": t_after,
        "sample_seconds_before": t_before,
        "nfe": nfe1,
        "nfe_before": nfe0,
    }


def sampler_options(sampler) -> str:
    opts = []
    for key in ("steps", "eta"):
        if hasattr(sampler, key):
            opts.append(f"{key}={getattr(sampler, key)}")
    return ", ".join(opts)


def machine() -> dict:
    import lightning
    import ot

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "pot": ot.__version__,
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def markdown(results: list[dict], info: dict, command: str) -> str:
    lines = [
        f"Machine: {info['cpu']}, {info['cores_visible']} cores visible (shared), "
        f"torch {info['torch']} with {info['torch_threads']} thread, Lightning "
        f"{info['lightning']}, POT {info['pot']}, Python {info['python']}; {info['date_utc']}.",
        "",
        f"Command: `{command}`",
        "",
        "| case | denoiser | data | params | sampler (NFE) | n | Sinkhorn before | after | "
        "floor (data vs data) | prior vs data | before/after | after/floor | train s (steps) | "
        "sample s |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['denoiser']} | {r['data']} | FAILED: {r['error']} |")
            continue
        lines.append(
            f"| {r['case']} | {r['denoiser']} | {r['data']} | {r['parameters']:,} | "
            f"{r['sampler']} ({r['nfe']}) | {r['n']} | {r['sinkhorn_before']:.4g} | "
            f"{r['sinkhorn_after']:.4g} | {r['sinkhorn_floor']:.4g} | {r['sinkhorn_prior']:.4g} | "
            f"{r['ratio_before_after']:.1f} | {r['after_over_floor']:.2f} | "
            f"{r['train_seconds']:.1f} ({r['train_steps']}) | {r['sample_seconds']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_out", help="output directory")
    parser.add_argument("--budget", type=float, default=40.0, help="training seconds per case")
    parser.add_argument("--n_vectors", type=int, default=1000, help="samples for vector data")
    parser.add_argument("--n_images", type=int, default=128, help="samples for image data")
    parser.add_argument("--cases", nargs="*", default=None, help="subset of case names")
    parser.add_argument("--quick", action="store_true", help="smoke mode: 2 steps, few samples")
    ns = parser.parse_args(argv)
    torch.set_num_threads(1)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning").setLevel(logging.ERROR)

    cases = CASES if not ns.cases else [c for c in CASES if c.name in ns.cases]
    unknown = set(ns.cases or []) - {c.name for c in CASES}
    if unknown:
        raise ValueError(f"--cases: unknown {sorted(unknown)}; known: {[c.name for c in CASES]}")
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="denoiser_learning_") as tmp:
        for case in cases:
            n = ns.n_images if case.images else ns.n_vectors
            if ns.quick:
                n = 16 if case.images else 64
            try:
                r = run_case(case, budget=ns.budget, n=n, quick=ns.quick, workdir=Path(tmp))
            except Exception as err:  # report and continue with the other cases
                r = {"case": case.name, "denoiser": case.denoiser, "data": case.data}
                r["error"] = f"{type(err).__name__}: {err}"
            results.append(r)
            print(json.dumps(r), flush=True)
    info = machine()
    command = "python tools/denoiser_learning.py " + " ".join(argv or sys.argv[1:])
    (out / "denoiser_learning.json").write_text(
        json.dumps({"machine": info, "command": command, "results": results}, indent=2)
    )
    table = markdown(results, info, command.strip())
    (out / "denoiser_learning.md").write_text(table)
    print(table)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
