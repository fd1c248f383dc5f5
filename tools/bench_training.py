"""Training throughput and memory: ``Trainer.fit`` on diffkit's module against bare PyTorch loops.

Every configuration runs in its own subprocess (``--worker``), so peak RSS (``ru_maxrss``) is
per configuration. Three implementations train the same network class with the same batch
size, optimizer (Adam, lr 1e-3), data loader and number of steps:

* ``diffkit``: ``lightning.Trainer(max_steps=N).fit(DiffusionModule(...), datamodule)`` with
  the module's own logging and a ``CSVLogger`` (or W&B offline, ``--logger wandb``); no
  checkpointing, progress bar, model summary or validation (measured: the training loop).
* ``bare+dkloss``: a plain loop over the same ``DataLoader`` calling the same diffkit loss
  (``DenoisingScoreMatching`` on a ``Parameterization``), ``loss.mean().backward()``,
  ``opt.step()``, ``zero_grad``, reading the loss as a float every 50 steps (as a logger would).
* ``bare``: the same loop with a hand-written eps-DSM in plain torch (closed-form VP alpha,
  sigma, input scale ``1 / sqrt(0.25 alpha^2 + sigma^2)``), to show what the loss itself costs.

Models: ``resnet`` (ResNetMLP width 256, depth 4, on the 2-D ``gmm`` datamodule, batch 256) and
``unet`` (a small U-Net on random 3x32x32 tensors, batch 16; the same tensors for all three).
Steps per second are timed from the start of step ``warmup`` to the end of the last step.
Ratios: time per step of ``diffkit`` over ``bare+dkloss`` (goals: resnet <= 1.25, unet <= 1.10)
and over ``bare``.

    python tools/bench_training.py [--out bench_out] [--logger csv|wandb] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import inspect
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import ROOT, Goal, add_common_arguments, median, write_report

IMPLS = ("diffkit", "bare+dkloss", "bare")
GOALS = {"resnet": 1.25, "unet": 1.10}
LOG_EVERY = 50


# ---------------------------------------------------------------------------- worker side
def _rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _filtered(cls: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls).parameters
    return {k: v for k, v in wanted.items() if k in params}


def _builtin(kind: str, name: str) -> Any:
    import importlib

    from diffkit.registry.builtins import BUILTINS

    target = BUILTINS.get(kind, {}).get(name)
    if target is None:
        raise LookupError(f"{kind} {name!r} is not registered yet")
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def _denoiser_factory(cfg: dict[str, Any]):
    if cfg["model"] == "resnet":
        cls = _builtin("denoiser", "resnet")
        kw = {"width": cfg["width"], "depth": cfg["depth"]}
    else:
        cls = _builtin("denoiser", "unet")
        kw = _filtered(
            cls,
            {
                "channels": cfg["width"],
                "model_channels": cfg["width"],
                "base_channels": cfg["width"],
                "channel_mult": (1, 2),
                "num_res_blocks": 1,
                "attention": (),
                "attention_resolutions": (),
            },
        )
    return functools.partial(cls, **kw)


class _ImageData:
    """Random 3x32x32 images as a diffkit datamodule (the same tensors for every impl)."""

    @staticmethod
    def build(cfg: dict[str, Any]):
        import torch
        from torch.utils.data import DataLoader

        from diffkit.data.base import DiffusionDataModule
        from diffkit.data.gmm import EpochShuffle, TensorDictDataset, collate_dict

        class RandomImages(DiffusionDataModule):
            def __init__(self, n: int, batch_size: int) -> None:
                super().__init__()
                self.data_shape = (3, 32, 32)
                gen = torch.Generator().manual_seed(0)
                x = torch.rand((n, 3, 32, 32), generator=gen) * 2 - 1
                self.dataset, self.batch_size = TensorDictDataset(x), batch_size

            def train_dataloader(self) -> DataLoader:
                return DataLoader(
                    self.dataset,
                    batch_size=self.batch_size,
                    sampler=EpochShuffle(len(self.dataset), 0),
                    drop_last=True,
                    collate_fn=collate_dict,
                )

        return RandomImages(n=max(cfg["batch"] * 8, 128), batch_size=cfg["batch"])


def _datamodule(cfg: dict[str, Any]):
    if cfg["model"] == "unet":
        return _ImageData.build(cfg)
    gmm = _builtin("datamodule", "gmm")
    dm = gmm(**_filtered(gmm, {"batch_size": cfg["batch"], "num_train": cfg["num_train"]}))
    dm.setup("fit")
    return dm


def _loop_forever(loader_fn):
    while True:
        yield from loader_fn()


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one configuration in this process; return its measurements."""
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    from diffkit.sdes.vp import VPSDE

    steps, warmup = cfg["steps"], cfg["warmup"]
    dm = _datamodule(cfg)
    factory = _denoiser_factory(cfg)
    stamps: list[float] = []
    rss_start = _rss_mb()
    result: dict[str, Any] = {}
    prof = cProfile.Profile() if cfg.get("profile") else None

    if cfg["impl"] == "diffkit":
        import lightning as L
        from lightning.pytorch.callbacks import Callback

        from diffkit.module import DiffusionModule

        class StepClock(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                stamps.append(time.perf_counter())

            def on_train_end(self, trainer, pl_module) -> None:
                stamps.append(time.perf_counter())

        sampler_cls = _builtin("sampler", "ddim")
        kw = {
            "sde": VPSDE(),
            "denoiser": factory,
            "loss": _builtin("loss", "dsm")(),
            "sampler": sampler_cls(steps=10),
            "data_shape": dm.data_shape,
            "optimizer": functools.partial(torch.optim.Adam, lr=1e-3),
            "seed": 0,
        }
        module = DiffusionModule(**_filtered(DiffusionModule, kw))
        tmp = tempfile.mkdtemp(prefix="bench_training_")
        if cfg["logger"] == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
            from lightning.pytorch.loggers import WandbLogger

            logger = WandbLogger(save_dir=tmp, project="diffkit-bench", offline=True)
        else:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(tmp, name="bench")
        trainer = L.Trainer(
            max_steps=steps,
            accelerator="cpu",
            devices=1,
            logger=logger,
            log_every_n_steps=LOG_EVERY,
            enable_checkpointing=False,
            enable_progress_bar=cfg.get("progress_bar", False),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[StepClock()],
        )
        rss_start = _rss_mb()
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        trainer.fit(module, datamodule=dm)
        if prof:
            prof.disable()
        result["fit_wall_s"] = time.perf_counter() - t0
        result["logged"] = sorted(trainer.logged_metrics)
        if cfg["logger"] == "wandb":
            import wandb

            wandb.finish()
    else:
        from diffkit.denoisers.parameterization import Parameterization

        sde = VPSDE()
        net = factory(_spec(dm.data_shape))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        if cfg["impl"] == "bare+dkloss":
            model = Parameterization(sde, net, target="eps")
            loss_fn = _builtin("loss", "dsm")()

            def compute(x0):
                return loss_fn(model, sde, x0, generator=gen).loss.mean()
        else:
            bmin, bd = sde.beta_min, sde.beta_max - sde.beta_min

            def compute(x0):
                b = x0.shape[0]
                t = 1e-5 + (1 - 1e-5) * torch.rand(b, generator=gen, dtype=torch.float64)
                log_a = -0.25 * t**2 * bd - 0.5 * t * bmin
                a = log_a.exp()
                s = (-torch.expm1(2 * log_a)).sqrt()
                c_in = (0.25 * a**2 + s**2).rsqrt()
                shape = (-1,) + (1,) * (x0.dim() - 1)
                eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
                x_t = a.float().view(shape) * x0 + s.float().view(shape) * eps
                pred = net(x_t * c_in.float().view(shape), t.float())
                return (pred - eps).square().flatten(1).mean(1).mean()

        net.train()
        batches = _loop_forever(dm.train_dataloader)
        rss_start = _rss_mb()
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        last = None
        for step in range(steps):
            batch = next(batches)
            stamps.append(time.perf_counter())
            loss = compute(batch["x"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % LOG_EVERY == 0:
                last = float(loss.detach())
        stamps.append(time.perf_counter())
        if prof:
            prof.disable()
        result["fit_wall_s"] = time.perf_counter() - t0
        result["last_logged_loss"] = last

    timed = len(stamps) - 1 - warmup
    result.update(
        {
            "steps": steps,
            "timed_steps": timed,
            "steps_per_s": timed / (stamps[-1] - stamps[warmup]) if timed > 0 else float("nan"),
            "peak_rss_mb": _peak_mb(),
            "rss_at_start_mb": rss_start,
        }
    )
    result["peak_minus_start_mb"] = result["peak_rss_mb"] - rss_start
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        text = buf.getvalue()
        result["profile"] = text[text.find("ncalls") :] if "ncalls" in text else text
    return result


def _spec(data_shape):
    from diffkit.denoisers.base import DenoiserSpec

    shape = tuple(data_shape)
    return DenoiserSpec(shape, shape, shape)


# ---------------------------------------------------------------------------- driver side
def launch(cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(cfg)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit {proc.returncode}"}


def run_in_process(cfg: dict[str, Any]) -> dict[str, Any]:
    """``--quick``: one interpreter for every configuration (peak memory is then shared)."""
    try:
        return run_worker(cfg)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def configs(quick: bool, models: list[str], logger: str, threads: int) -> list[dict[str, Any]]:
    out = []
    for m in models:
        if m == "resnet":
            base = {"width": 64 if quick else 256, "depth": 2 if quick else 4, "batch": 256}
            base |= {"steps": 30 if quick else 400, "warmup": 5 if quick else 50}
            base |= {"num_train": 2048 if quick else 8192}
        else:
            base = {"width": 16 if quick else 32, "batch": 4 if quick else 16}
            base |= {"steps": 6 if quick else 60, "warmup": 2 if quick else 10}
        for impl in IMPLS:
            out.append({"model": m, "impl": impl, "logger": logger, "threads": threads, **base})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="resnet,unet", help="comma list: resnet,unet")
    parser.add_argument("--logger", choices=("csv", "wandb"), default="csv")
    parser.add_argument("--repeats", type=int, default=2, help="subprocess runs per config")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    args = parser.parse_args(argv)
    if args.worker:
        res = run_worker(json.loads(args.worker))
        print("@@" + json.dumps(res), flush=True)
        return 0

    models = ["resnet"] if args.quick else args.models.split(",")
    repeats = 1 if args.quick else args.repeats
    cfgs = configs(args.quick, models, args.logger, args.threads)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(repeats):
        order = cfgs if rep % 2 == 0 else list(reversed(cfgs))  # alternate order across repeats
        for cfg in order:
            res = run_in_process(cfg) if args.quick else launch(cfg)
            print(cfg["model"], cfg["impl"], {k: v for k, v in res.items() if k != "profile"})
            runs.setdefault((cfg["model"], cfg["impl"]), []).append(res)

    rows = []
    rates: dict[tuple[str, str], float] = {}
    for cfg in cfgs:
        key = (cfg["model"], cfg["impl"])
        ok = [r for r in runs[key] if "error" not in r]
        row: dict[str, Any] = {"model": cfg["model"], "impl": cfg["impl"], "batch": cfg["batch"]}
        if not ok:
            row["error"] = runs[key][0].get("error")
            rows.append(row)
            continue
        rate = median(r["steps_per_s"] for r in ok)
        rates[key] = rate
        row |= {
            "steps": cfg["steps"],
            "steps_per_s": rate,
            "ms_per_step": 1e3 / rate,
            "peak_rss_mb": median(r["peak_rss_mb"] for r in ok),
            "peak_minus_start_mb": median(r["peak_minus_start_mb"] for r in ok),
            "runs": len(ok),
        }
        rows.append(row)
    goals = []
    for row in rows:
        m, impl = row["model"], row["impl"]
        if impl == "diffkit" or (m, impl) not in rates or (m, "diffkit") not in rates:
            continue
        ratio = rates[(m, impl)] / rates[(m, "diffkit")]  # time ratio diffkit / baseline
        row["diffkit_time_ratio"] = ratio
        row["diffkit_extra_ms_per_step"] = 1e3 / rates[(m, "diffkit")] - 1e3 / rates[(m, impl)]
        if impl == "bare+dkloss":
            goals.append(Goal(f"{m}: diffkit fit / bare loop (same loss)", ratio, GOALS[m]))
        else:
            goals.append(Goal(f"{m}: diffkit fit / bare loop (hand-written DSM)", ratio, GOALS[m]))

    profile_md = ""
    if not args.quick and not args.no_profile and "resnet" in models:
        cfg = dict(next(c for c in cfgs if c["model"] == "resnet" and c["impl"] == "diffkit"))
        cfg["profile"] = True
        res = launch(cfg)
        if "profile" in res:
            lines = res["profile"].splitlines()[:28]
            profile_md = (
                "cProfile of the diffkit resnet run (whole `fit`, by own time):\n\n```\n"
                + "\n".join(lines)
                + "\n```"
            )
    notes = [
        "diffkit_time_ratio = (time per step of diffkit) / (time per step of this baseline); "
        "measured in the same tool run, configurations interleaved, median over repeats.",
        "Peak memory is the worker's ru_maxrss (includes the interpreter, torch and, for "
        "diffkit, Lightning); peak_minus_start_mb is the growth after the model and data were "
        "built.",
        "Absolute numbers are noisy on a shared 2-core machine (other jobs were running); the "
        "ratios are measured side by side.",
    ]
    if args.quick:
        notes.append("--quick: tiny sizes, all configurations in one process (smoke test only).")
    write_report(
        "bench_training",
        args.out,
        title="Training throughput (optimizer steps/s, CPU) and peak memory",
        rows=rows,
        columns=[
            "model",
            "impl",
            "batch",
            "steps",
            "steps_per_s",
            "ms_per_step",
            "diffkit_time_ratio",
            "diffkit_extra_ms_per_step",
            "peak_rss_mb",
            "peak_minus_start_mb",
            "error",
        ],
        goals=goals,
        notes=notes,
        settings={"logger": args.logger, "threads": args.threads, "repeats": repeats},
        extra={"runs": {f"{k[0]}/{k[1]}": v for k, v in runs.items()}},
        extra_md=profile_md,
    )
    print((args.out / "bench_training.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
