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
``unet`` (a small U-Net on random 3x32x32 tensors, batch 8; the same tensors for all three).
Steps per second are timed from the start of step ``warmup`` to the end of the last step.
Ratios: time per step of ``diffkit`` over ``bare+dkloss`` (goals: resnet <= 1.25, unet <= 1.10)
and over ``bare``.

    python tools/bench_training.py [--out bench_out] [--logger csv|wandb] [--quick]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import ROOT, Goal, add_common_arguments, median, median_se, write_report

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


def _builtin(kind: str, name: str) -> Any:
    from diffkit.registry import REGISTRIES

    return REGISTRIES[kind].get(name)


def _denoiser_factory(cfg: dict[str, Any]):
    if cfg["model"] == "resnet":
        cls = _builtin("denoiser", "resnet")
        kw = {"width": cfg["width"], "depth": cfg["depth"]}
    else:
        cls = _builtin("denoiser", "unet")
        kw = {
            "channels": cfg["width"],
            "channel_mult": (1, 2),
            "num_res_blocks": 1,
            "attn_resolutions": (),
        }
    return functools.partial(cls, **kw)


class _ImageData:
    """Random 3x32x32 images as a diffkit datamodule (the same tensors for every impl)."""

    @staticmethod
    def build(cfg: dict[str, Any]):
        import torch
        from torch.utils.data import DataLoader

        from diffkit.data.base import DiffusionDataModule
        from diffkit.data.gmm import TensorDictDataset, collate_dict
        from diffkit.data.shuffle import epoch_shuffle

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
                    sampler=epoch_shuffle(self.dataset, 0, self.trainer),
                    drop_last=True,
                    collate_fn=collate_dict,
                )

        return RandomImages(n=max(cfg["batch"] * 8, 128), batch_size=cfg["batch"])


def _datamodule(cfg: dict[str, Any]):
    if cfg["model"] == "unet":
        return _ImageData.build(cfg)
    gmm = _builtin("datamodule", "gmm")
    dm = gmm(batch_size=cfg["batch"], num_train=cfg["num_train"])
    dm.setup("fit")
    return dm


def _loop_forever(loader_fn):
    while True:
        yield from loader_fn()


class Runner:
    """One implementation, built once; :meth:`run` trains ``n`` more steps and returns the
    wall-clock and process-CPU time stamps taken at the start of every step and at the end."""

    def __init__(self, impl: str, cfg: dict[str, Any], dm: Any) -> None:
        import torch

        from diffkit.sdes.vp import VPSDE

        self.impl, self.cfg, self.dm = impl, cfg, dm
        self.wall: list[float] = []
        self.cpu: list[float] = []
        factory = _denoiser_factory(cfg)
        sde = VPSDE()
        if impl.startswith("diffkit"):
            from diffkit.module import DiffusionModule

            kw = {
                "sde": sde,
                "denoiser": factory,
                "loss": _builtin("loss", "dsm")(),
                "sampler": _builtin("sampler", "ddim")(steps=10),
                "data_shape": dm.data_shape,
                "optimizer": functools.partial(torch.optim.Adam, lr=1e-3),
                "seed": 0,
            }
            self.module = DiffusionModule(**kw)
            if impl == "diffkit-nobins":  # ablation: without the per-step binned-loss logging
                self.module._log_binned = lambda out: None
            self.tmp = tempfile.mkdtemp(prefix="bench_training_")
            self.logged: list[str] = []
            return
        net = factory(_spec(dm.data_shape))
        self.opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        if impl == "bare+dkloss":
            from diffkit.denoisers.parameterization import Parameterization

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

        self.compute, self.net = compute, net.train()
        self.batches = _loop_forever(dm.train_dataloader)
        self.step = 0
        self.last_loss: float | None = None

    def close(self) -> None:
        """Remove the logger's directory (diffkit runs)."""
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def _stamp(self) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())

    def run(self, n: int) -> tuple[list[float], list[float]]:
        self.wall, self.cpu = [], []
        if self.impl.startswith("diffkit"):
            self._fit(n)
        else:
            for _ in range(n):
                batch = next(self.batches)
                self._stamp()
                loss = self.compute(batch["x"])
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                if self.step % LOG_EVERY == 0:  # what a logger would read
                    self.last_loss = float(loss.detach())
                self.step += 1
            self._stamp()
        return self.wall, self.cpu

    def _fit(self, n: int) -> None:
        import lightning as L
        from lightning.pytorch.callbacks import Callback

        runner = self

        class StepClock(Callback):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
                runner._stamp()

            def on_train_end(self, trainer, pl_module) -> None:
                runner._stamp()

        if self.cfg["logger"] == "wandb":
            os.environ.setdefault("WANDB_MODE", "offline")
            os.environ.setdefault("WANDB_SILENT", "true")
            from lightning.pytorch.loggers import WandbLogger

            logger = WandbLogger(save_dir=self.tmp, project="diffkit-bench", offline=True)
        else:
            from lightning.pytorch.loggers import CSVLogger

            logger = CSVLogger(self.tmp, name="bench")
        trainer = L.Trainer(
            max_steps=n,
            accelerator="cpu",
            devices=1,
            logger=logger,
            log_every_n_steps=LOG_EVERY,
            enable_checkpointing=False,
            enable_progress_bar=self.cfg.get("progress_bar", False),
            enable_model_summary=False,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            callbacks=[StepClock()],
        )
        trainer.fit(self.module, datamodule=self.dm)
        self.logged = sorted(trainer.logged_metrics)
        if self.cfg["logger"] == "wandb":
            import wandb

            wandb.finish()


def _rate(stamps: list[float], warmup: int) -> float:
    timed = len(stamps) - 1 - warmup
    return timed / (stamps[-1] - stamps[warmup]) if timed > 0 else float("nan")


def run_worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """``mode == "time"``: every implementation of one model in this process, alternating in
    rounds of ``steps`` steps (so they share the machine's load pattern); per round, steps/s
    by wall clock and by process CPU time. ``mode == "memory"``: one implementation for
    ``steps`` steps, reporting peak RSS. ``profile``: cProfile the diffkit runs."""
    import torch

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    dm = _datamodule(cfg)
    if cfg["mode"] == "memory":
        rss0 = _rss_mb()
        runner = Runner(cfg["impl"], cfg, dm)
        rss_built = _rss_mb()
        wall, _ = runner.run(cfg["steps"])
        peak = _peak_mb()
        runner.close()
        return {
            "impl": cfg["impl"],
            "peak_rss_mb": peak,
            "rss_before_build_mb": rss0,
            "peak_minus_before_build_mb": peak - rss0,
            "build_mb": rss_built - rss0,
            "steps_per_s": _rate(wall, 1),
        }
    impls = cfg["impls"]
    runners = {impl: Runner(impl, cfg, dm) for impl in impls}
    prof = cProfile.Profile() if cfg.get("profile") else None
    rounds: list[dict[str, Any]] = []
    for r in range(cfg["rounds"]):
        order = impls[r % len(impls) :] + impls[: r % len(impls)]  # rotate who goes first
        this: dict[str, Any] = {}
        for impl in order:
            if prof and impl == "diffkit":
                prof.enable()
            wall, cpu = runners[impl].run(cfg["steps"])
            if prof and impl == "diffkit":
                prof.disable()
            this[impl] = {"wall": _rate(wall, cfg["warmup"]), "cpu": _rate(cpu, cfg["warmup"])}
        rounds.append(this)
    for runner in runners.values():
        runner.close()
    out: dict[str, Any] = {"rounds": rounds}
    if "diffkit" in runners:
        out["logged"] = runners["diffkit"].logged
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
        text = buf.getvalue()
        out["profile"] = text[text.find("ncalls") :] if "ncalls" in text else text
    return out


def _spec(data_shape):
    from diffkit.denoisers.base import DenoiserSpec

    shape = tuple(data_shape)
    return DenoiserSpec(shape, shape, shape)


# ---------------------------------------------------------------------------- driver side
def launch(cfg: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env.setdefault("WANDB_SILENT", "true")
    if cfg.get("mode") == "memory":
        # Fixed glibc mmap threshold: tensors above 64 KiB are returned to the OS when freed,
        # so peak RSS follows live memory instead of heap fragmentation (see bench_sampling).
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
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
    """``--quick``: the worker in this interpreter (no subprocess)."""
    try:
        return run_worker(cfg)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def model_config(model: str, quick: bool) -> dict[str, Any]:
    if model == "resnet":
        cfg = {"width": 64 if quick else 256, "depth": 2 if quick else 4, "batch": 256}
        cfg |= {"steps": 12 if quick else 60, "warmup": 2 if quick else 8}
        return cfg | {"rounds": 1 if quick else 4, "num_train": 2048 if quick else 8192}
    cfg = {"width": 16 if quick else 32, "batch": 4 if quick else 8}
    cfg |= {"steps": 4 if quick else 12, "warmup": 1 if quick else 2}
    return cfg | {"rounds": 1 if quick else 3}


def main(argv: list[str] | None = None) -> int:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="resnet,unet", help="comma list: resnet,unet")
    parser.add_argument("--logger", choices=("csv", "wandb"), default="csv")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--profile", action="store_true", help="cProfile the diffkit runs")
    parser.add_argument(
        "--ablate",
        action="store_true",
        help="also time 'diffkit-nobins': the module without its per-step binned-loss logging",
    )
    args = parser.parse_args(argv)
    if args.worker:
        res = run_worker(json.loads(args.worker))
        print("@@" + json.dumps(res), flush=True)
        return 0

    models = ["resnet"] if args.quick else args.models.split(",")
    common = {"logger": args.logger, "threads": args.threads}
    rows: list[dict[str, Any]] = []
    goals: list[Goal] = []
    raw: dict[str, Any] = {}
    profiles: dict[str, str] = {}
    impls = [*IMPLS, "diffkit-nobins"] if args.ablate else list(IMPLS)
    for m in models:
        cfg = {
            "model": m,
            "mode": "time",
            "impls": impls,
            **common,
            **model_config(m, args.quick),
        }
        res = run_in_process(cfg) if args.quick else launch(cfg)
        raw[m] = res
        if "error" in res:
            rows.append({"model": m, "impl": "all", "error": res["error"]})
            continue
        if args.profile:  # a separate run: profiling distorts the timed ratios
            pcfg = {**cfg, "impls": ["diffkit"], "rounds": 1, "profile": True}
            profiles[m] = launch(pcfg).get("profile", "profile run failed")
        rounds = res["rounds"]
        mem: dict[str, dict[str, Any]] = {}
        if not args.quick and not args.no_memory:
            for impl in IMPLS:
                mcfg = {**cfg, "mode": "memory", "impl": impl, "profile": False}
                mcfg["steps"] = max(cfg["warmup"] + 2, cfg["steps"] // 4)
                mem[impl] = launch(mcfg)
                raw[f"{m}/memory/{impl}"] = mem[impl]
        for impl in impls:
            wall = [rd[impl]["wall"] for rd in rounds]
            cpu = [rd[impl]["cpu"] for rd in rounds]
            row: dict[str, Any] = {
                "model": m,
                "impl": impl,
                "batch": cfg["batch"],
                "steps_x_rounds": f"{cfg['steps']}x{cfg['rounds']}",
                "steps_per_s": median(wall),
                "ms_per_step": 1e3 / median(wall),
                "cpu_steps_per_s": median(cpu),
            }
            if impl != "diffkit":
                ratio = median(rd[impl]["wall"] / rd["diffkit"]["wall"] for rd in rounds)
                per_round = [rd[impl]["cpu"] / rd["diffkit"]["cpu"] for rd in rounds]
                ratio_cpu = median(per_round)
                row["diffkit_time_ratio"] = ratio
                row["diffkit_cpu_time_ratio"] = ratio_cpu
                row["diffkit_cpu_time_ratio_se"] = median_se(per_round)
                row["diffkit_extra_cpu_ms_per_step"] = 1e3 / median(
                    [rd["diffkit"]["cpu"] for rd in rounds]
                ) - 1e3 / median(cpu)
                if impl in IMPLS:
                    label = "same loss" if impl == "bare+dkloss" else "hand-written DSM"
                    goals.append(
                        Goal(
                            f"{m}: diffkit fit / bare loop ({label}), CPU time",
                            ratio_cpu,
                            GOALS[m],
                            note=f"wall-clock ratio {ratio:.3f}",
                            noise=row["diffkit_cpu_time_ratio_se"],
                        )
                    )
            mrow = mem.get(impl, {})
            row["peak_rss_mb"] = mrow.get("peak_rss_mb")
            row["peak_growth_mb"] = mrow.get("peak_minus_before_build_mb")
            if "error" in mrow:
                row["error"] = f"memory run: {mrow['error']}"
            rows.append(row)

    extra_md = ""
    for m, text in profiles.items():
        lines = text.splitlines()[:28]
        extra_md += (
            f"cProfile of one separate diffkit {m} run (by own time):\n\n```\n"
            + "\n".join(lines)
            + "\n```\n\n"
        )
    notes = [
        "Per model, one process runs the three implementations in alternating rounds (the "
        "first of each round rotates), each round a fresh `Trainer.fit` of `steps` steps for "
        "diffkit; the first `warmup` steps of a round are not timed. diffkit_time_ratio is the "
        "median over rounds of (diffkit time per step) / (baseline time per step) within the "
        "same round; diffkit_cpu_time_ratio is the same with process CPU time, which is less "
        "sensitive to other jobs on the machine.",
        "Peak memory: a separate subprocess per implementation (ru_maxrss; includes the "
        "interpreter, torch and Lightning, which the datamodule imports in every case), run "
        "with MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors leave the RSS; "
        "peak_growth_mb is the growth from just before the model was built.",
        "Absolute numbers are noisy on a shared 2-core machine (other jobs were running); the "
        "ratios are measured side by side.",
    ]
    if args.quick:
        notes.append("--quick: tiny sizes, in one process (smoke test only).")
    write_report(
        "bench_training",
        args.out,
        title="Training throughput (optimizer steps/s, CPU) and peak memory",
        rows=rows,
        columns=[
            "model",
            "impl",
            "batch",
            "steps_x_rounds",
            "steps_per_s",
            "ms_per_step",
            "cpu_steps_per_s",
            "diffkit_time_ratio",
            "diffkit_cpu_time_ratio",
            "diffkit_extra_cpu_ms_per_step",
            "peak_rss_mb",
            "peak_growth_mb",
            "error",
        ],
        goals=goals,
        notes=notes,
        settings={"logger": args.logger, "threads": args.threads, "log_every_n_steps": LOG_EVERY},
        extra={"raw": raw},
        extra_md=extra_md,
    )
    print((args.out / "bench_training.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
