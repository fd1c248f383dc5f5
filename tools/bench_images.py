"""Image training side by side: ``diffkit fit`` against a plain diffusers training loop.

Both sides train the same network (diffkit's ``unet_small``: a U-Net with channel multipliers
(1, 2), one residual block per level, attention at half resolution) from the same seed, on the
same training split, with the same batch size, optimiser (Adam, gradient clipping 1), number of
steps and sampling cost (DDIM, 50 NFE), on one CPU thread:

* ``diffkit/<config>``: ``DiffkitCLI`` (what ``diffkit fit`` runs) with a config built from
  ``CONFIGS`` (the loss section) and the datamodule by short name; sampling through
  ``DiffusionModule.sample`` with the module's default x0 thresholding for images (static clip to
  [-1, 1]) and DDIM on diffkit's default (quadratic) grid. No ``residual: gaussian``.
* ``diffusers/<prediction>``: a hand-written loop: ``DDPMScheduler`` (linear betas 1e-4 .. 0.02,
  1000 steps, ``clip_sample=True``) for noising, MSE on eps or v, and sampling with
  ``DDIMScheduler`` (``clip_sample=True``, ``timestep_spacing="trailing"``, eta 0).

Datasets (offline): ``digits8`` (sklearn digits 1x8x8), ``digits16`` (the same upscaled to
16x16), ``shapes`` (diffkit's procedural 3x16x16 shapes). Metrics of ``--samples`` samples
against held-out images, on flattened images: exact W2 and Sinkhorn cost (diffkit's metrics,
POT), a classifier Frechet distance (``FD_clf``: a small CNN trained once per dataset on the
training split's labels; Frechet distance of its penultimate-layer features) and the sample
mean and standard deviation. Throughput: training steps per CPU second from step ``WARMUP`` on,
sampling CPU seconds; ratios diffkit / diffusers per (dataset, seed) from the same process (CPU
time, robust to other processes on a shared machine; wall times are recorded too).

Protocol: every framework's candidates run on ``digits8`` (3 seeds); the best of each framework
(lowest mean ``FD_clf``) then runs on the 16x16 datasets (``--stage 16``).

    python tools/bench_images.py --stage 8  --out bench_out/images
    python tools/bench_images.py --stage 16 --datasets digits16 --out bench_out/images
    python tools/bench_images.py --stage 16 --datasets shapes --out bench_out/images
    python tools/bench_images.py --report --out bench_out/images --docs docs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import ROOT, Goal, write_report

WARMUP = 20
DATASETS: dict[str, dict[str, Any]] = {
    "digits8": {"class_path": "digits", "init_args": {"num_test": 297}},
    "digits16": {"class_path": "digits", "init_args": {"num_test": 297, "image_size": 16}},
    "shapes": {"class_path": "shapes", "init_args": {"num_train": 4096, "num_test": 400}},
}
CONFIGS: dict[str, dict[str, Any]] = {
    "diffkit/v": {"target": "v"},
    "diffkit/edm": {
        "target": "x0",
        "weighting": "edm",
        "time_sampling": "log_normal",
        "preconditioning": "edm",
    },
    "diffkit/eps": {"target": "eps"},
    "diffusers/eps": {"prediction_type": "epsilon"},
    "diffusers/v": {"prediction_type": "v_prediction"},
}


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def datamodule(name: str, batch: int, seed: int) -> Any:
    from diffkit.data.images import DigitsDataModule
    from diffkit.data.shapes import ShapesDataModule

    spec = DATASETS[name]
    cls = DigitsDataModule if spec["class_path"] == "digits" else ShapesDataModule
    return cls(**spec["init_args"], batch_size=batch, num_val=0, seed=seed)


# ---------------------------------------------------------------------------- classifier
def make_classifier(channels: int, classes: int) -> Any:
    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(32, 64, 3, padding=1, stride=2),
        nn.SiLU(),
        nn.Conv2d(64, 64, 3, padding=1, stride=2),
        nn.SiLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.SiLU(),
    )
    return nn.ModuleDict({"features": features, "head": nn.Linear(64, classes)})


def train_classifier(name: str, steps: int, cache: Path) -> tuple[Any, float]:
    """The dataset's feature network (trained once on the training split, cached) and its
    held-out accuracy."""
    import torch

    path = cache / f"classifier_{name}.pt"
    dm = datamodule(name, 128, 0)
    train, ref = dm.split("train"), dm.split("reference")
    classes = int(dm.label_count)
    net = make_classifier(dm.data_shape[0], classes)
    if path.exists():
        saved = torch.load(path, weights_only=True)
        net.load_state_dict(saved["state"])
        return net.eval(), float(saved["accuracy"])
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    n = len(train)
    for _ in range(steps):
        batch = train.__getitems__(torch.randint(0, n, (128,), generator=g).tolist())
        x = batch["x"] + 0.05 * torch.randn(batch["x"].shape, generator=g)  # mild robustness
        loss = torch.nn.functional.cross_entropy(net["head"](net["features"](x)), batch["y"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    held = ref.__getitems__(list(range(len(ref))))
    with torch.no_grad():
        acc = float((net["head"](net["features"](held["x"])).argmax(1) == held["y"]).float().mean())
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "accuracy": acc}, path)
    return net, acc


def frechet(a: Any, b: Any) -> float:
    """Frechet distance of Gaussians fitted to feature sets ``(n, d)`` and ``(m, d)``."""
    import numpy as np
    from scipy import linalg

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def metrics(x: Any, ref: Any, classifier: Any) -> dict[str, float]:
    import torch

    from diffkit.metrics.wasserstein import W2, Sinkhorn

    xf, rf = x.reshape(x.shape[0], -1).double(), ref.reshape(ref.shape[0], -1).double()
    out: dict[str, float] = {}
    for key, metric in (("w2", W2()), ("sinkhorn", Sinkhorn())):
        metric.update(xf, rf)
        out[key] = float(metric.compute()["value"])
    with torch.no_grad():
        fx = classifier["features"](x.float().clamp(-1, 1))
        fr = classifier["features"](ref.float())
    out["fd_clf"] = frechet(fx.numpy(), fr.numpy())
    out["mean"], out["std"] = float(x.mean()), float(x.std())
    out["ref_mean"], out["ref_std"] = float(ref.mean()), float(ref.std())
    return out


# ---------------------------------------------------------------------------- diffkit side
class StepTimer:
    """Lightning callback: CPU and wall time from the start of step ``WARMUP`` to the end."""

    def __new__(cls) -> Any:
        from lightning.pytorch.callbacks import Callback

        class _Timer(Callback):
            def __init__(self) -> None:
                self.start: tuple[float, float] | None = None
                self.end: tuple[float, float] | None = None
                self.steps = 0

            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                if trainer.global_step == WARMUP and self.start is None:
                    self.start = (time.process_time(), time.perf_counter())

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                self.end = (time.process_time(), time.perf_counter())
                self.steps = trainer.global_step

        return _Timer()


def diffkit_config(dataset: str, config: str, args: argparse.Namespace, seed: int) -> dict:
    data = json.loads(json.dumps(DATASETS[dataset]))
    data["init_args"].update({"batch_size": args.batch, "num_val": 0, "seed": seed})
    return {
        "seed_everything": seed,
        "num_threads": 1,
        "model": {
            "sde": "vp",
            "denoiser": {"class_path": "unet_small", "init_args": {"channels": args.channels}},
            "loss": {"class_path": "dsm", "init_args": CONFIGS[config]},
            "sampler": {"class_path": "ddim", "init_args": {"steps": args.nfe}},
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": args.lr}},
            "seed": seed,
        },
        "data": data,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_steps": args.steps,
            "gradient_clip_val": 1.0,
            "limit_val_batches": 0,
            "num_sanity_val_steps": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "logger": False,
        },
    }


def run_diffkit(dataset: str, config: str, args: argparse.Namespace, seed: int) -> dict:
    import torch
    import yaml

    from diffkit.cli.lightning_cli import DiffkitCLI

    timer = StepTimer()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "fit.yaml"
        cfg.write_text(yaml.safe_dump(diffkit_config(dataset, config, args, seed)))
        cli = DiffkitCLI(
            ["fit", "-c", str(cfg), f"--trainer.default_root_dir={tmp}"],
            trainer_defaults={"callbacks": [timer]},
        )
    module = cli.model.eval()
    steps = timer.steps - WARMUP
    train = {
        "train_cpu_s": timer.end[0] - timer.start[0],
        "train_wall_s": timer.end[1] - timer.start[1],
        "timed_steps": steps,
        "thresholding": module.thresholding,
    }
    g = torch.Generator().manual_seed(10_000 + seed)
    c0, w0 = time.process_time(), time.perf_counter()
    res = module.sample(args.samples, generator=g)
    sample = {"sample_cpu_s": time.process_time() - c0, "sample_wall_s": time.perf_counter() - w0}
    return {**train, **sample, "nfe": res.nfe, "x": res.x.detach()}


# ---------------------------------------------------------------------------- diffusers side
def run_diffusers(dataset: str, config: str, args: argparse.Namespace, seed: int) -> dict:
    import diffusers
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from diffkit.data.gmm import collate_dict
    from diffkit.denoisers.base import DenoiserSpec
    from diffkit.denoisers.unet import unet_small

    prediction = CONFIGS[config]["prediction_type"]
    dm = datamodule(dataset, args.batch, seed)
    shape = tuple(dm.data_shape)
    torch.manual_seed(seed)
    net = unet_small(DenoiserSpec(shape, shape, shape, None), channels=args.channels)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=True,
        prediction_type=prediction,
    )
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dm.split("train"),
        batch_size=args.batch,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
        collate_fn=collate_dict,
    )
    step, start = 0, None
    net.train()
    while step < args.steps:
        for batch in loader:
            if step == WARMUP:
                start = (time.process_time(), time.perf_counter())
            x0 = batch["x"]
            t = torch.randint(0, 1000, (x0.shape[0],), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            x_t = sched.add_noise(x0, noise, t)
            out = net(x_t, t.float())
            target = noise if prediction == "epsilon" else sched.get_velocity(x0, noise, t)
            loss = F.mse_loss(out, target)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            if step % 50 == 0:
                float(loss)  # what a logger reads
            step += 1
            if step >= args.steps:
                break
    end = (time.process_time(), time.perf_counter())
    net.eval()
    ddim = diffusers.DDIMScheduler.from_config(
        sched.config, clip_sample=True, timestep_spacing="trailing", set_alpha_to_one=True
    )
    gs = torch.Generator().manual_seed(10_000 + seed)
    c0, w0 = time.process_time(), time.perf_counter()
    with torch.no_grad():
        ddim.set_timesteps(args.nfe)
        x = torch.randn((args.samples, *shape), generator=gs)
        for t in ddim.timesteps:
            out = net(x, t.float().expand(x.shape[0]))
            x = ddim.step(out, t, x, eta=0.0).prev_sample
    return {
        "train_cpu_s": end[0] - start[0],
        "train_wall_s": end[1] - start[1],
        "timed_steps": args.steps - WARMUP,
        "thresholding": "static (clip_sample)",
        "sample_cpu_s": time.process_time() - c0,
        "sample_wall_s": time.perf_counter() - w0,
        "nfe": len(ddim.timesteps),
        "x": x,
    }


# ---------------------------------------------------------------------------- driver
def run_cell(dataset: str, config: str, seed: int, args: argparse.Namespace) -> dict:
    import torch

    classifier, accuracy = train_classifier(dataset, args.classifier_steps, args.out)
    ref = datamodule(dataset, args.batch, 0).reference_samples(
        min(args.samples, DATASETS[dataset]["init_args"]["num_test"])
    )
    runner = run_diffkit if config.startswith("diffkit") else run_diffusers
    res = runner(dataset, config, args, seed)
    x = res.pop("x")
    row = {
        "dataset": dataset,
        "config": config,
        "seed": seed,
        "steps": args.steps,
        "classifier_accuracy": accuracy,
        **res,
        **metrics(x, ref, classifier),
    }
    row["train_steps_per_cpu_s"] = row["timed_steps"] / row["train_cpu_s"]
    grids = args.out / "grids"
    grids.mkdir(parents=True, exist_ok=True)
    torch.save(x[:64].clone(), grids / f"{dataset}__{config.replace('/', '-')}__{seed}.pt")
    if seed == 0:
        torch.save(ref[:64].clone(), grids / f"{dataset}__reference.pt")
    return row


def stage_configs(stage: str, out: Path) -> list[str]:
    """Stage 8: every candidate. Stage 16: the best of each framework on digits8."""
    if stage == "8":
        return list(CONFIGS)
    rows = [r for r in load_rows(out) if r["dataset"] == "digits8"]
    best = []
    for framework in ("diffkit", "diffusers"):
        cands = {r["config"] for r in rows if r["config"].startswith(framework)}
        if not cands:
            raise SystemExit(f"no digits8 results for {framework} in {out}: run --stage 8 first")
        best.append(min(cands, key=lambda c: _mean(rows, c, "fd_clf")))
    return best


def _mean(rows: list[dict], config: str, key: str) -> float:
    return statistics.fmean(r[key] for r in rows if r["config"] == config)


def load_rows(out: Path) -> list[dict]:
    rows = []
    for path in sorted(Path(out).glob("rows_*.jsonl")):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def main_run(args: argparse.Namespace) -> None:
    _threads()
    args.out.mkdir(parents=True, exist_ok=True)
    configs = args.configs.split(",") if args.configs else stage_configs(args.stage, args.out)
    datasets = (
        args.datasets.split(",")
        if args.datasets
        else (["digits8"] if args.stage == "8" else ["digits16", "shapes"])
    )
    log = args.out / f"rows_{'_'.join(datasets)}_{args.stage}{args.tag}.jsonl"
    done = {(r["dataset"], r["config"], r["seed"]) for r in load_rows(args.out)}
    for dataset in datasets:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for config in configs:
                if (dataset, config, seed) in done:
                    continue
                t0 = time.perf_counter()
                row = run_cell(dataset, config, seed, args)
                row["cell_wall_s"] = time.perf_counter() - t0
                with log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(
                    f"{dataset} {config} seed {seed}: FD_clf {row['fd_clf']:.3f} sinkhorn "
                    f"{row['sinkhorn']:.3f} w2 {row['w2']:.3f} std {row['std']:.3f} "
                    f"({row['cell_wall_s']:.0f} s)",
                    flush=True,
                )


# ---------------------------------------------------------------------------- report
def summarise(rows: list[dict]) -> tuple[list[dict], list[dict], list[Goal]]:
    """Per (dataset, config) means and standard deviations over seeds; per-dataset
    comparisons of the best configs; the goals."""
    table, compare, goals = [], [], []
    keys = ("fd_clf", "sinkhorn", "w2", "mean", "std")
    for dataset in DATASETS:
        here = [r for r in rows if r["dataset"] == dataset]
        if not here:
            continue
        configs = sorted({r["config"] for r in here})
        for config in configs:
            rs = [r for r in here if r["config"] == config]
            entry: dict[str, Any] = {"dataset": dataset, "config": config, "seeds": len(rs)}
            for k in keys:
                vals = [r[k] for r in rs]
                entry[k] = statistics.fmean(vals)
                entry[f"{k}_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
            entry["data_mean"], entry["data_std"] = rs[0]["ref_mean"], rs[0]["ref_std"]
            entry["train_steps_per_cpu_s"] = statistics.fmean(
                r["train_steps_per_cpu_s"] for r in rs
            )
            entry["sample_cpu_s"] = statistics.fmean(r["sample_cpu_s"] for r in rs)
            entry["classifier_accuracy"] = rs[0]["classifier_accuracy"]
            table.append(entry)
        best = {
            fw: min(
                (e for e in table if e["dataset"] == dataset and e["config"].startswith(fw)),
                key=lambda e: e["fd_clf"],
                default=None,
            )
            for fw in ("diffkit", "diffusers")
        }
        if best["diffkit"] is None or best["diffusers"] is None:
            continue
        dk, df = best["diffkit"], best["diffusers"]
        # throughput ratios per seed, paired (same process, same seed)
        train_r, sample_r = [], []
        for seed in sorted({r["seed"] for r in here}):
            a = [r for r in here if r["config"] == dk["config"] and r["seed"] == seed]
            b = [r for r in here if r["config"] == df["config"] and r["seed"] == seed]
            if a and b:
                train_r.append(a[0]["train_steps_per_cpu_s"] / b[0]["train_steps_per_cpu_s"])
                sample_r.append(a[0]["sample_cpu_s"] / b[0]["sample_cpu_s"])
        comp = {
            "dataset": dataset,
            "diffkit": dk["config"],
            "diffusers": df["config"],
            "fd_clf_ratio": dk["fd_clf"] / df["fd_clf"],
            "sinkhorn_ratio": dk["sinkhorn"] / df["sinkhorn"],
            "w2_ratio": dk["w2"] / df["w2"],
            "train_throughput_ratio": statistics.median(train_r) if train_r else None,
            "sampling_time_ratio": statistics.median(sample_r) if sample_r else None,
        }
        compare.append(comp)
        goals += [
            Goal(f"{dataset}: FD_clf diffkit / diffusers", comp["fd_clf_ratio"], 1.0),
            Goal(f"{dataset}: Sinkhorn diffkit / diffusers", comp["sinkhorn_ratio"], 1.0),
            Goal(
                f"{dataset}: diffusers / diffkit training steps per CPU s",
                1 / comp["train_throughput_ratio"] if comp["train_throughput_ratio"] else None,
                1 / 0.95,
                "throughput ratio >= 0.95",
            ),
            Goal(
                f"{dataset}: sampling CPU time diffkit / diffusers",
                comp["sampling_time_ratio"],
                1.05,
            ),
        ]
    return table, compare, goals


def write_grids(out: Path, docs: Path) -> list[str]:
    """One PNG per dataset: reference images and seed-0 samples of every config."""
    import torch
    from PIL import Image

    from diffkit.callbacks.sample_grid import image_grid

    grids = out / "grids"
    names = []
    for dataset in DATASETS:
        ref = grids / f"{dataset}__reference.pt"
        if not ref.exists():
            continue
        panels = [("reference", torch.load(ref, weights_only=True))]
        for path in sorted(grids.glob(f"{dataset}__*__0.pt")):
            panels.append((path.stem.split("__")[1], torch.load(path, weights_only=True)))
        for label, x in panels:
            x = x[:64]
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            img = image_grid(x, 8).permute(1, 2, 0).numpy()
            scale = max(1, 320 // img.shape[0])
            name = f"images_{dataset}_{label}.png"
            Image.fromarray(img).resize(
                (img.shape[1] * scale, img.shape[0] * scale), Image.NEAREST
            ).save(docs / name)
            names.append(name)
    return names


def main_report(args: argparse.Namespace) -> None:
    rows = load_rows(args.out)
    table, compare, goals = summarise(rows)
    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    names = write_grids(args.out, docs)
    settings = json.loads((args.out / "settings.json").read_text())
    grid_md = ["Sample grids (seed 0, first 64 samples; reference = held-out data):", ""]
    for dataset in DATASETS:
        mine = [n for n in names if n.startswith(f"images_{dataset}_")]
        if mine:
            grid_md.append(f"{dataset}: " + " ".join(f"![{n}]({n})" for n in mine))
            grid_md.append("")
    wall = sum(r.get("cell_wall_s", 0.0) for r in rows)
    write_report(
        "images_bench",
        docs,
        title="Image training: diffkit fit vs a plain diffusers loop",
        rows=table,
        columns=[
            "dataset",
            "config",
            "seeds",
            "fd_clf",
            "fd_clf_sd",
            "sinkhorn",
            "sinkhorn_sd",
            "w2",
            "w2_sd",
            "mean",
            "std",
            "data_mean",
            "data_std",
            "train_steps_per_cpu_s",
            "sample_cpu_s",
            "classifier_accuracy",
        ],
        goals=goals,
        settings=settings,
        extra={"comparisons": compare, "cells": rows},
        extra_md="Best config of each framework per dataset (lowest mean FD_clf), diffkit / "
        "diffusers:\n\n"
        + _table(
            compare,
            [
                "dataset",
                "diffkit",
                "diffusers",
                "fd_clf_ratio",
                "sinkhorn_ratio",
                "w2_ratio",
                "train_throughput_ratio",
                "sampling_time_ratio",
            ],
        )
        + "\n\n"
        + "\n".join(grid_md),
        notes=[
            f"{len(rows)} training runs (cells); their wall times sum to {wall / 60:.0f} min (one "
            "CPU thread each, up to four processes at once, on a 2-core machine shared with "
            "other jobs; throughput and sampling ratios are from CPU time, paired by dataset "
            "and seed).",
            "fd_clf: Frechet distance of the penultimate features of a small CNN trained on the "
            "training split (classifier_accuracy: its held-out accuracy); sinkhorn: "
            "entropic OT cost (reg 0.05 of the cost scale, squared-distance units); w2: exact "
            "W2 (POT emd); all on flattened images against held-out data.",
            "diffkit configs train without residual: gaussian; x0 is clipped to [-1, 1] when "
            "sampling (thresholding: auto, linked from the datamodule's data_range).",
        ],
    )


def _table(rows: list[dict], columns: list[str]) -> str:
    from benchmark_report import markdown_table

    return markdown_table(rows, columns)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "images")
    p.add_argument("--stage", choices=("8", "16"), default="8")
    p.add_argument("--datasets", default="", help="comma-separated (default: by stage)")
    p.add_argument("--configs", default="", help="comma-separated (default: by stage)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--tag", default="", help="suffix of this process's results file")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--nfe", type=int, default=50)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--classifier_steps", type=int, default=300)
    p.add_argument("--report", action="store_true", help="aggregate results into --docs")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.samples, args.nfe, args.classifier_steps = WARMUP + 3, 16, 3, 5
        args.seeds = "0"
    if args.report:
        main_report(args)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {
        k: getattr(args, k)
        for k in ("steps", "batch", "channels", "lr", "nfe", "samples", "classifier_steps")
    }
    settings["network"] = f"unet_small(channels={args.channels})"
    (args.out / "settings.json").write_text(json.dumps(settings, indent=2))
    main_run(args)


if __name__ == "__main__":
    main()
