"""Optimised time grids: exact W2 on Gaussian data, transfer between spectra, and a trained model.

1. ``table``: Song's VP SDE (beta 0.1..20, T = 1), t_min = 1e-3, data N(0, diag lambda) with the
   CIFAR-10 spectrum, start N(0, I). For each deterministic sampler and NFE, the exact W2 of its
   output law to the data on the quadratic, log-SNR and Karras grids and on the grid optimised by
   :func:`diffkit.gaussian.grid_optimization.optimize_grid` (L-BFGS on the exact W2, started from
   the log-SNR and from the Karras grid; the better result is kept).
2. ``transfer``: a grid optimised on one spectrum (CIFAR-10 or GRF32), evaluated on the other,
   against the grid optimised there and the log-SNR / Karras grids.
3. ``trained`` (``--trained``): the README toy (2-D Gaussian mixture, VP, ResNet-MLP, 800 steps),
   Sinkhorn cost of 2000 samples to 2000 held-out ones at NFE 10 with Karras, log-SNR and optimised
   grids (optimised on the data's empirical covariance, ``diffkit schedule --data``, and on
   CIFAR-10), mean over seeds.

    python tools/bench_grids.py [--out bench_out] [--quick] [--trained]

Writes ``bench_grids.json`` and ``bench_grids.md``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from benchmark_report import add_common_arguments, markdown_table, write_report

from diffkit.gaussian import GaussianScore, Modes, data_cov, propagate, w2_to_data
from diffkit.gaussian.grid_optimization import optimize_grid
from diffkit.gaussian.spectra import cifar10_spectrum, compress, grf32_spectrum
from diffkit.samplers.base import Sampler
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.deis import DEIS
from diffkit.samplers.heun import Heun
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.vp import VPSDE

T_MIN = 1e-3
#: name -> (factory(steps, grid), model evaluations per step)
SAMPLERS: dict[str, tuple[Callable[[int, object], Sampler], int]] = {
    "ddim": (lambda n, g: DDIM(n, grid=g, t_min=T_MIN), 1),
    "deis_tab2": (lambda n, g: DEIS(n, grid=g, t_min=T_MIN, order=2), 1),
    "deis_tab3": (lambda n, g: DEIS(n, grid=g, t_min=T_MIN, order=3), 1),
    "deis_rhoab2": (lambda n, g: DEIS(n, grid=g, t_min=T_MIN, order=2, variant="rhoab"), 1),
    "deis_rhoab3": (lambda n, g: DEIS(n, grid=g, t_min=T_MIN, order=3, variant="rhoab"), 1),
    "heun": (lambda n, g: Heun(n, grid=g, t_min=T_MIN), 2),
    "deis_logrho3": (lambda n, g: DEIS(n, grid=g, t_min=T_MIN, order=3, variant="logrho"), 1),
    # n - 1 steps and a final Tweedie step: n model evaluations in all
    "deis_logrho3_den": (
        lambda n, g: DEIS(
            n - 1, grid=g, t_min=T_MIN, order=3, variant="logrho", denoise_final=True
        ),
        1,
    ),
    "unipc3_bh1_eps": (
        lambda n, g: UniPC(n, grid=g, t_min=T_MIN, order=3, solver_type="bh1", predict_x0=False),
        1,
    ),
}
FIXED_GRIDS = ("quadratic", "log_snr", "karras")


def spectra() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Distinct eigenvalues and multiplicities of each spectrum."""
    return {"cifar10": compress(cifar10_spectrum()), "grf32": compress(grf32_spectrum())}


def exact_w2(sampler: Sampler, sde: VPSDE, lam: torch.Tensor, weights: torch.Tensor) -> float:
    modes = Modes(sde, (lam.numel(),))
    start = torch.ones(lam.numel(), 1, 1, dtype=torch.float64)  # the VP prior N(0, I)
    cov, _ = propagate(sampler, sde, GaussianScore(sde, data_cov(sde, lam)), start, modes)
    return float(w2_to_data(lam, cov, weights))


def best_grid(name: str, steps: int, sde: VPSDE, lam, weights, iterations: int):
    """The better of the optimisations started from the log-SNR and from the Karras grid."""
    factory, _ = SAMPLERS[name]
    runs = [
        optimize_grid(
            factory(steps, "log_snr"), sde, lam, weights=weights, init=init, iterations=iterations
        )
        for init in ("log_snr", "karras")
    ]
    best = min(runs, key=lambda r: r.value)
    return best, sum(r.seconds for r in runs)


def table(nfes: list[int], names: list[str], iterations: int) -> tuple[list[dict], dict]:
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    lam, weights = spectra()["cifar10"]
    rows, grids = [], {}
    for name in names:
        factory, per_step = SAMPLERS[name]
        for nfe in nfes:
            steps = max(nfe // per_step, 1)
            row = {"sampler": name, "nfe": steps * per_step}
            for g in FIXED_GRIDS:
                row[g] = exact_w2(factory(steps, g), sde, lam, weights)
            best, seconds = best_grid(name, steps, sde, lam, weights, iterations)
            row |= {"optimized": best.value, "from": best.initial_grid, "opt_s": seconds}
            check = exact_w2(factory(steps, best.times.tolist()), sde, lam, weights)
            row["check"] = abs(check - best.value)
            rows.append(row)
            grids[(name, nfe)] = best.times
            print(f"table {name} NFE {nfe}: {row['optimized']:.4g}", flush=True)
    return rows, grids


def transfer(nfes: list[int], names: list[str], iterations: int) -> list[dict]:
    sde = VPSDE(beta_min=0.1, beta_max=20.0)
    data = spectra()
    rows = []
    for name in names:
        factory, per_step = SAMPLERS[name]
        for nfe in nfes:
            steps = max(nfe // per_step, 1)
            native = {k: best_grid(name, steps, sde, *v, iterations)[0] for k, v in data.items()}
            for target, (lam, weights) in data.items():
                (source,) = [k for k in data if k != target]
                rows.append(
                    {
                        "sampler": name,
                        "nfe": steps * per_step,
                        "data": target,
                        "log_snr": exact_w2(factory(steps, "log_snr"), sde, lam, weights),
                        "karras": exact_w2(factory(steps, "karras"), sde, lam, weights),
                        "native": native[target].value,
                        f"from_{source}": exact_w2(
                            factory(steps, native[source].times.tolist()), sde, lam, weights
                        ),
                    }
                )
            print(f"transfer {name} NFE {nfe} done", flush=True)
    for r in rows:  # one column name for the transferred grid
        r["transferred"] = r.pop("from_grf32", None) or r.pop("from_cifar10", None)
    return rows


#: trained models: config, training steps, samples per Sinkhorn evaluation (digits: its whole
#: held-out split), config overrides.
TRAINED = {
    "toy": ("configs/toy/gmm_vp_resnet.yaml", 800, 2000),
    "digits": ("configs/digits/vp_unet.yaml", 1100, 297),
}


def _sinkhorn(x: torch.Tensor, y: torch.Tensor) -> float:
    from diffkit.metrics.wasserstein import Sinkhorn

    metric = Sinkhorn()
    metric.update(x.double().reshape(x.shape[0], -1), y.double().reshape(y.shape[0], -1))
    return float(metric.compute()["value"])


def _mean_se(values: list[float]) -> tuple[float, float | None]:
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else None
    return statistics.mean(values), se


def trained(out: Path, which: str, seeds: int, quick: bool) -> list[dict]:
    """A model trained with ``which``'s config; Sinkhorn to held-out data at NFE 10 for
    several grids (grids from ``diffkit schedule``), mean and standard error over seeds."""
    import yaml

    from diffkit.cli.main import main
    from diffkit.cli.sample_cmd import load_module

    config, max_steps, n = TRAINED[which]
    root = Path(__file__).resolve().parents[1]
    cfg = yaml.safe_load((root / config).read_text())
    cfg["trainer"].update(max_steps=40 if quick else max_steps, max_epochs=None, logger=False)
    cfg["trainer"]["default_root_dir"] = str(out / f"{which}_run")
    keep = [c for c in cfg["trainer"]["callbacks"] if c["class_path"] == "ema"]
    cfg["trainer"]["callbacks"] = [
        *keep,
        {"class_path": "ModelCheckpoint", "init_args": {"save_last": True}},
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{which}_fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    t0 = time.perf_counter()
    assert main(["fit", "-c", str(path)]) == 0
    print(f"{which} trained in {time.perf_counter() - t0:.0f} s", flush=True)
    ckpt = max((out / f"{which}_run").rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    module = load_module(ckpt)
    data_args = [f"--data.{k}={v}" for k, v in cfg["data"].get("init_args", {}).items()]
    data = ["--data", cfg["data"]["class_path"], *data_args]
    from diffkit.cli.sample_cmd import _instantiate, _parser
    from diffkit.data.base import DiffusionDataModule

    parser = _parser("data", "")
    parser.add_argument("--data", type=DiffusionDataModule)
    dm = _instantiate(parser, parser.parse_args(data)).data
    dm.setup("fit")
    if which == "digits":  # the whole held-out split; floor: as many training images
        refs = [dm.reference_samples(n)] * seeds
        train = torch.cat([b["x"] for b in dm.train_dataloader()])
        floors = [
            _sinkhorn(
                train[torch.randperm(len(train), generator=torch.Generator().manual_seed(s))[:n]],
                refs[0],
            )
            for s in range(seeds)
        ]
    else:  # fresh draws of the law; floor: two independent draws
        refs = [
            dm.reference_samples(n, generator=torch.Generator().manual_seed(100 + s))
            for s in range(seeds)
        ]
        floors = [
            _sinkhorn(
                dm.reference_samples(n, generator=torch.Generator().manual_seed(200 + s)), refs[s]
            )
            for s in range(seeds)
        ]
    mean, se = _mean_se(floors)
    rows = [{"model": which, "sampler": "data vs data", "sinkhorn": mean, "se": se}]
    for name, order in (("ddim", None), ("deis_tab2", 2), ("deis_tab3", 3)):
        sampler_args = (
            ["--sampler", "ddim"]
            if order is None
            else ["--sampler", "deis", "--sampler.order", str(order)]
        )
        grids: dict[str, str] = {"karras": "karras", "log_snr": "log_snr"}
        for source, spec in (("data", data), ("cifar10", ["--spectrum", "cifar10"])):
            grid = out / f"{which}_{name}_{source}.json"
            argv = ["schedule", *sampler_args, "--steps", "10", *spec, "--out", str(grid)]
            assert main(argv) == 0
            grids[f"optimized ({source})"] = str(grid)
        for label, grid in grids.items():
            sampler = (
                DDIM(10, grid=grid, t_min=T_MIN)
                if order is None
                else DEIS(10, grid=grid, t_min=T_MIN, order=order)
            )
            costs = []
            for seed in range(seeds):
                gen = torch.Generator().manual_seed(seed)
                x = module.sample(n, sampler=sampler, generator=gen).x
                costs.append(_sinkhorn(x, refs[seed]))
            mean, se = _mean_se(costs)
            rows.append(
                {
                    "model": which,
                    "sampler": name,
                    "nfe": 10,
                    "grid": label,
                    "sinkhorn": mean,
                    "se": se,
                }
            )
            print(f"{which} {name} {label}: {mean:.4g}", flush=True)
    for r in rows:
        r |= {"seeds": seeds, "samples": n, "train_steps": 40 if quick else max_steps}
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument(
        "--trained",
        nargs="*",
        choices=list(TRAINED),
        default=[],
        help="also train these models and compare grids on them by Sinkhorn",
    )
    parser.add_argument("--iterations", type=int, default=200, help="L-BFGS iterations")
    parser.add_argument(
        "--samplers", nargs="+", choices=list(SAMPLERS), help="table rows (default: all)"
    )
    parser.add_argument("--skip-transfer", action="store_true", help="no transfer section")
    parser.add_argument(
        "--skip-gaussian", action="store_true", help="only the trained models (with --trained)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    quick = args.quick
    names = ["ddim", "deis_tab2"] if quick else args.samplers or list(SAMPLERS)
    nfes = [10] if quick else [5, 10, 20]
    iterations = 10 if quick else args.iterations
    rows, moved = [], []
    if not args.skip_gaussian:
        rows, _ = table(nfes, names, iterations)
        moved_names = names if quick else ["deis_tab3", "deis_rhoab3", "ddim"]
        moved = [] if args.skip_transfer else transfer(nfes, moved_names, iterations)
    extra_md = ["### Transfer between spectra (W2; grid optimised on the other spectrum)", ""]
    extra_md += [
        markdown_table(
            moved, ["sampler", "nfe", "data", "log_snr", "karras", "native", "transferred"]
        ),
        "",
    ]
    toy = [r for which in args.trained for r in trained(args.out, which, 2 if quick else 5, quick)]
    if toy:
        extra_md += ["### Trained models (Sinkhorn cost to held-out data, NFE 10)", ""]
        extra_md += [
            markdown_table(
                toy, ["model", "sampler", "nfe", "grid", "sinkhorn", "se", "seeds", "samples"]
            )
        ]
    write_report(
        "bench_grids",
        args.out,
        title="Optimised time grids: exact W2 on the CIFAR-10 spectrum (VP, t_min 1e-3)",
        rows=rows,
        columns=["sampler", "nfe", *FIXED_GRIDS, "optimized", "from", "opt_s", "check"],
        extra={"transfer": moved, "trained": toy},
        extra_md="\n".join(extra_md),
        settings={"iterations": iterations, "t_min": T_MIN, "quick": quick},
        notes=[
            "W2 exact (covariance propagation of the real sampler code, no Monte Carlo).",
            "optimized: best of L-BFGS runs from the log-SNR and Karras grids; from: which; "
            "opt_s: seconds for both; check: |W2 of a sampler configured with the optimised "
            "times - W2 reported by the optimiser|.",
            f"total time {time.perf_counter() - t0:.0f} s",
        ],
    )
    print(f"wrote {args.out}/bench_grids.md in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
