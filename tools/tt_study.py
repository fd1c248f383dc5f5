"""The tensor-train study: FTT denoisers trained by ALS, Riemannian SGD and Adam against the
ResNet-MLP trained by Adam, on the datasets of the tensor-train DDPM draft (BE24).

For each dataset and seed the tool trains, under the VP SDE with the eps-DSM loss and the
Gaussian residual (``sigma_data = 1``; the same parameterisation for every model):

* FTT, Legendre and B-spline bases (``m = 8`` functions per coordinate, a time mode of 8), two
  ranks, each by ALS (one sweep per step on a pool of ``--als-batch`` draws, proximal term),
  Riemannian SGD (line search, momentum) and Adam (lr 5e-3);
* the ResNet-MLP (depth 2, width chosen so its parameter count is closest to the largest FTT of the
  dataset) by Adam (lr 2e-3).

Training uses the module's own code path (``DiffusionModule._loss`` for Adam,
:func:`~diffkit.denoisers.tt_pool.output_quadratic` + the TT optimiser for ALS/RO, exactly what
``training_step`` runs) without Lightning's loop, so that wall times are those of the steps.
The validation loss on a fixed pool is recorded along the way (its time is excluded).

Metrics, per run, on ``--samples`` generated samples (DDIM, ``--ddim-steps``) against as
many held-out reference samples:

* ``sinkhorn``: debiased Sinkhorn divergence (POT, squared-distance units, ``reg = 0.05`` of the
  cost scale); ``w2``: exact W2 (POT ``emd2``);
* ``nll``: for the tabular sets (``gaussian``, ``power``, ``gas``, ``hepmass``), the test NLL in
  nats per sample through the probability-flow ODE (RK4, 20 steps from ``t = 1e-3``;
  Hutchinson's divergence with one fixed Rademacher probe per point: unbiased, one VJP per
  evaluation), on ``--nll-points`` rows;
* ``params``, ``train_s`` (training wall time), ``step_ms`` (median step), and the validation-loss
  history from which the report derives the wall time to a target.

Reference rows per dataset and seed: ``data`` (an independent data sample: the finite-sample
floor) and ``prior`` (draws of N(0, I), the VP prior).

UCI POWER / GAS / HEPMASS come from ``--uci-root`` (MAF's files); without it, small stand-in
files in their formats are generated (``diffkit.testing.uci_files``; GAS's stand-in table goes
through the same preprocessing without the pickle, so pandas is not needed): the numbers are then
about the models on synthetic data of those shapes, not the UCI benchmarks.

``--quick`` runs a few steps of a few cells (smoke test). Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import ot
import torch

from diffkit.data.gaussian import GaussianDataModule
from diffkit.data.gmm import GaussianMixtureDataModule
from diffkit.data.sklearn_vectors import Digits64DataModule, SwissRoll3DDataModule
from diffkit.data.tabular import ArraySplitsDataModule
from diffkit.data.toy2d import Toy2DDataModule
from diffkit.data.uci import GasDataModule, HepmassDataModule, PowerDataModule, preprocess_gas
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.denoisers.tensor_train import TensorTrain
from diffkit.denoisers.tt_pool import output_quadratic
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.metrics.nll import pf_ode_log_likelihood
from diffkit.module import DiffusionModule
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.vp import VPSDE

ROOT = Path(__file__).resolve().parents[1]
TABULAR = ("gaussian", "power", "gas", "hepmass")
DATASETS = (
    "gaussian",
    "gmm8",
    "moons",
    "circles",
    "swiss_roll",
    "swiss_roll_3d",
    "digits64",
    "power",
    "gas",
    "hepmass",
)
#: FTT ranks per dataset (two each); the 21-D and 64-D sets use smaller ones (ALS cost ~ r^6).
RANKS = {"hepmass": (2, 4), "digits64": (2, 4)}
DEFAULT_RANKS = (4, 8)


def datamodule(name: str, seed: int, uci_root: Path):
    if name == "gaussian":
        return GaussianDataModule(
            mean=[0.5, -0.5, 1.0, 0.0],
            cov=[[1.0, 0.6, 0.0, 0.2], [0.6, 1.0, 0.3, 0.0], [0.0, 0.3, 0.5, 0.1],
                 [0.2, 0.0, 0.1, 0.8]],
            num_train=20000, seed=seed,
        )  # fmt: skip
    if name == "gmm8":
        return GaussianMixtureDataModule(
            preset="random", dim=8, num_components=8, std=0.1, radius=1.0, num_train=20000,
            seed=0,  # one mixture; the seed varies the runs, not the law
        )  # fmt: skip
    if name in ("moons", "circles", "swiss_roll"):
        return Toy2DDataModule(dataset=name, num_train=20000, seed=seed)
    if name == "swiss_roll_3d":
        return SwissRoll3DDataModule(num_train=20000, seed=seed)
    if name == "digits64":
        return Digits64DataModule(num_val=100, num_test=297, seed=seed)
    if name == "gas" and not (uci_root / "gas" / "ethylene_CO.pickle").is_file():
        return StandInGas(seed=seed)  # stand-in table, the same preprocessing, no pandas
    cls = {"power": PowerDataModule, "gas": GasDataModule, "hepmass": HepmassDataModule}[name]
    return cls(root=str(uci_root), seed=seed)


class StandInGas(ArraySplitsDataModule):
    """GAS stand-in: the generated ethylene-CO table through MAF's preprocessing (as
    :class:`~diffkit.data.uci.GasDataModule` does after reading the pickle)."""

    name = "gas"

    def __init__(self, seed: int) -> None:
        super().__init__(512, None, seed)
        self.data_shape = (8,)

    def load_splits(self):
        from diffkit.testing.uci_files import gas_table

        return tuple(torch.from_numpy(p) for p in preprocess_gas(*gas_table(n=25000, seed=0)))


def write_standins(root: Path, datasets: list[str]) -> None:
    from diffkit.testing.uci_files import write_hepmass, write_power

    if "power" in datasets:
        write_power(root, n=25000, seed=0)
    if "hepmass" in datasets:
        write_hepmass(root, n_train=25000, n_test=6000, seed=0)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def matched_width(dim: int, budget: int) -> int:
    """The even ResNet width (depth 2, embedding 16) whose parameter count is closest to
    ``budget`` (the count is a quadratic in the width: fitted exactly from three widths)."""
    from diffkit.denoisers.base import DenoiserSpec

    spec = DenoiserSpec((dim,), (dim,), (dim,))
    ws = (8.0, 16.0, 32.0)
    ps = [float(n_params(ResNetMLP(spec, width=int(w), depth=2, emb_dim=16))) for w in ws]
    coef = torch.linalg.solve(
        torch.tensor([[w * w, w, 1.0] for w in ws], dtype=torch.float64),
        torch.tensor(ps, dtype=torch.float64),
    ).tolist()
    return min(
        range(4, 1000, 2), key=lambda w: abs(coef[0] * w * w + coef[1] * w + coef[2] - budget)
    )


def make_module(dim: int, cell: dict, seed: int) -> DiffusionModule:
    torch.manual_seed(seed)
    loss = DenoisingScoreMatching(residual="gaussian", sigma_data=1.0)
    if cell["model"] == "resnet":
        factory = functools.partial(ResNetMLP, width=cell["width"], depth=2, emb_dim=16)
    else:
        factory = functools.partial(
            TensorTrain,
            rank=cell["rank"],
            basis=cell["basis"],
            num_basis=8,
            time_basis=8,
            domain=(-4.0, 4.0),
            optimizer=cell["optimizer"],
            ridge=1e-6,
            als_proximal=cell.get("proximal", 0.0),
            riemannian_lr=1.0,
            riemannian_momentum=0.5,
            seed=seed,
        )
    return DiffusionModule(VPSDE(), factory, loss=loss, data_shape=(dim,), seed=seed)


def train(module: DiffusionModule, x_train: torch.Tensor, x_val: torch.Tensor, cell: dict,
          seed: int) -> dict:  # fmt: skip
    """Train by the cell's optimiser; returns timings and the validation-loss history."""
    steps, batch = cell["steps"], cell["batch"]
    gen = torch.Generator().manual_seed(seed + 12345)
    manual = cell["optimizer"] in ("als", "riemannian")
    if manual:
        opt = module.net.make_optimizer()
    else:
        opt = torch.optim.Adam(module.parameters(), lr=cell["lr"])

    def val_loss() -> float:
        with torch.no_grad():
            g = torch.Generator().manual_seed(777)
            return module.loss(module.model, module.sde, x_val, generator=g).loss.mean().item()

    history = [[0.0, 0, val_loss()]]
    every = max(1, steps // 12)
    train_s, step_times = 0.0, []
    for step in range(steps):
        idx = torch.randint(0, x_train.shape[0], (batch,), generator=gen)
        x0 = x_train[idx]
        g = module._generator(step, stream=0)
        t0 = time.perf_counter()
        if manual:
            hessian = bool(getattr(opt, "needs_hessian", False))
            opt.step(
                lambda x0=x0, g=g, h=hessian: output_quadratic(
                    module.net, module.model, module.loss, module.sde, x0, None, g, hessian=h
                )
            )
        else:
            opt.zero_grad(set_to_none=True)
            module._loss({"x": x0}, g, None).loss.mean().backward()
            opt.step()
        dt = time.perf_counter() - t0
        train_s += dt
        step_times.append(dt)
        if (step + 1) % every == 0 or step + 1 == steps:
            history.append([round(train_s, 4), step + 1, val_loss()])
    return {
        "train_s": train_s,
        "step_ms": 1e3 * statistics.median(step_times),
        "history": history,
        "val_loss": history[-1][2],
    }


def ot_metrics(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(debiased Sinkhorn divergence, exact W2)`` between two sample sets (float64)."""
    x, y = x.double(), y.double()
    n, m = x.shape[0], y.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=torch.float64)
    b = torch.full((m,), 1.0 / m, dtype=torch.float64)
    w2 = math.sqrt(max(float(ot.emd2(a, b, ot.dist(x, y), numItermax=2_000_000)), 0.0))
    scale = float(ot.dist(x, y).max())
    xs, ys = x / math.sqrt(scale), y / math.sqrt(scale)

    def cost(p, q, wp, wq) -> float:
        return float(ot.sinkhorn2(wp, wq, ot.dist(p, q), 0.05, method="sinkhorn", numItermax=2000))

    sk = cost(xs, ys, a, b) - 0.5 * cost(xs, xs, a, a) - 0.5 * cost(ys, ys, b, b)
    return sk * scale, w2


def nll(module: DiffusionModule, x: torch.Tensor, dataset: str, seed: int) -> float:
    res = pf_ode_log_likelihood(
        module.model,
        module.sde,
        x.to(next(module.parameters()).dtype),
        divergence="hutchinson",
        solver="rk4",
        steps=20,
        eps=1e-3,
        generator=torch.Generator().manual_seed(seed),
    )
    return float(-res.logp.mean())


def cells_for(dataset: str, dim: int, quick: bool, args) -> list[dict]:
    ranks = RANKS.get(dataset, DEFAULT_RANKS)
    cells = []
    for basis in ("legendre", "bspline"):
        for rank in ranks:
            for optimizer in ("als", "riemannian", "adam"):
                cell = {"model": "ftt", "basis": basis, "rank": rank, "optimizer": optimizer}
                if optimizer == "als":
                    cell.update(steps=args.als_steps, batch=args.als_batch, proximal=args.als_prox)
                elif optimizer == "riemannian":
                    cell.update(steps=args.ro_steps, batch=args.ro_batch)
                else:
                    cell.update(steps=args.adam_steps, batch=256, lr=5e-3)
                cells.append(cell)
    if args.only:
        cells = [c for c in cells if f"{c['basis']}:{c['rank']}:{c['optimizer']}" in args.only]
    if quick:
        cells = [c for c in cells if c["rank"] == ranks[0] and c["basis"] == "legendre"]
        for c in cells:
            c["steps"], c["batch"] = 3, 128
    return cells


def run_dataset(dataset: str, seeds: list[int], args, uci_root: Path) -> list[dict]:
    rows: list[dict] = []
    for seed in seeds:
        dm = datamodule(dataset, seed, uci_root)
        dm.setup()
        dim = dm.data_shape[0]
        x_train = dm.split("train").x
        x_val_all = dm.split("val").x
        x_val = x_val_all[: min(1024, x_val_all.shape[0])]
        n = (
            min(args.samples, dm.split("test").x.shape[0])
            if dataset == "digits64"
            else args.samples
        )
        ref = dm.reference_samples(n, generator=torch.Generator().manual_seed(1000 + seed))
        floor_x = x_train[
            torch.randperm(x_train.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        ]
        prior = torch.randn(n, dim, generator=torch.Generator().manual_seed(2000 + seed))
        base = {"dataset": dataset, "dim": dim, "seed": seed, "basis": None, "rank": None,
                "optimizer": None, "params": 0, "nll": None, "train_s": 0.0}  # fmt: skip
        for label, x in (("data", floor_x), ("prior", prior)):
            sk, w2 = ot_metrics(x, ref)
            rows.append({**base, "model": label, "sinkhorn": sk, "w2": w2})
        x_nll = dm.split("test").x[: args.nll_points] if dataset in TABULAR else None
        cells = cells_for(dataset, dim, args.quick, args)
        budget = max(
            n_params(make_module(dim, c, 0).net) for c in cells if c["optimizer"] == "adam"
        )
        resnet = {
            "model": "resnet",
            "optimizer": "adam",
            "width": matched_width(dim, budget),
            "steps": 3 if args.quick else args.adam_steps,
            "batch": 128 if args.quick else 256,
            "lr": 2e-3,
        }
        for cell in [*cells, resnet]:
            module = make_module(dim, cell, seed)
            t0 = time.perf_counter()
            out = train(module, x_train, x_val, cell, seed)
            module.eval()
            with torch.no_grad():
                gen = torch.Generator().manual_seed(3000 + seed)
                sample = module.sample(
                    n, sampler=DDIM(steps=args.ddim_steps), generator=gen
                ).x.float()
            sample = torch.nan_to_num(sample, nan=1e3, posinf=1e3, neginf=-1e3)
            sk, w2 = ot_metrics(sample, ref)
            row = {
                **base,
                "model": cell["model"],
                "basis": cell.get("basis"),
                "rank": cell.get("rank"),
                "width": cell.get("width"),
                "optimizer": cell["optimizer"],
                "params": n_params(module.net),
                "steps": cell["steps"],
                "batch": cell["batch"],
                "sinkhorn": sk,
                "w2": w2,
                **out,
            }
            if x_nll is not None:
                row["nll"] = nll(module, x_nll, dataset, seed)
            row["total_s"] = time.perf_counter() - t0
            rows.append(row)
            print(
                f"{dataset:>13} s{seed} {cell['model']:>6} {cell.get('basis')!s:>8} "
                f"r{cell.get('rank')} {cell['optimizer']:>10}  params {row['params']:>6}  "
                f"sk {sk:.4f}  w2 {w2:.3f}  nll {row['nll']}  train {out['train_s']:.1f}s  "
                f"total {row['total_s']:.1f}s",
                flush=True,
            )
    return rows


def _fmt(values: list[float], digits: int = 3) -> str:
    """``median [min, max]`` over seeds."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.{digits}g}"
    return f"{med:.{digits}g} [{min(vals):.{digits}g}, {max(vals):.{digits}g}]"


def time_to(history: list[list[float]], target: float) -> float | None:
    """Training seconds at the first recorded validation loss <= ``target``."""
    return next((h[0] for h in history if h[2] <= target), None)


def report(rows: list[dict]) -> str:
    """Markdown tables: one per dataset, one line per cell, median [min, max] over seeds."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        resnet = [r for r in rs if r["model"] == "resnet"]
        target = None
        if resnet and all("val_loss" in r for r in resnet):
            target = statistics.median(r["val_loss"] for r in resnet)
        out.append(f"\n#### {dataset} (D = {rs[0]['dim']})\n")
        if target is not None:
            out.append(f"Target validation loss: the ResNet's median final value, {target:.4f}.\n")
        out.append(
            "| model | optimizer | basis | rank | params | sinkhorn | w2 | nll | train s "
            "| step ms | s to target | seeds |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        keys = dict.fromkeys((r["model"], r["optimizer"], r["basis"], r["rank"]) for r in rs)
        for key in keys:
            cell = [r for r in rs if (r["model"], r["optimizer"], r["basis"], r["rank"]) == key]
            ttt = "–"
            if target is not None and "history" in cell[0]:
                times = [time_to(r["history"], target) for r in cell]
                hit = [t for t in times if t is not None]
                ttt = f"{_fmt(hit)} ({len(hit)}/{len(times)})" if hit else f"never (0/{len(times)})"
            out.append(
                f"| {key[0]} | {key[1] or '–'} | {key[2] or '–'} | {key[3] or '–'} "
                f"| {cell[0]['params'] or '–'} | {_fmt([r['sinkhorn'] for r in cell])} "
                f"| {_fmt([r['w2'] for r in cell])} | {_fmt([r.get('nll') for r in cell])} "
                f"| {_fmt([r['train_s'] for r in cell], 2) if cell[0]['train_s'] else '–'} "
                f"| {_fmt([r.get('step_ms') for r in cell], 2)} | {ttt} | {len(cell)} |"
            )
    return "\n".join(out) + "\n"


def summary(rows: list[dict], tolerance: float = 1.1) -> str:
    """The draft's question per dataset: FTT cells of equal quality (median Sinkhorn at most
    ``tolerance`` times the ResNet's) and whether they need <= 0.5x its parameters or its wall
    time; plus the best FTT cell, the data floor and the prior."""
    lines = [
        "| dataset | data floor | prior | ResNet (params, train s) | best FTT cell | "
        "equal-quality FTT cells (params ratio, time ratio) | <= 0.5x params | <= 0.5x time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]

        def med(model: str, key: str, rs=rs) -> float:
            return statistics.median(r[key] for r in rs if r["model"] == model)

        resnet = [r for r in rs if r["model"] == "resnet"]
        if not resnet:
            continue
        sk_net, t_net, p_net = (
            med("resnet", "sinkhorn"),
            med("resnet", "train_s"),
            resnet[0]["params"],
        )
        cells: dict[tuple, list[dict]] = {}
        for r in rs:
            if r["model"] == "ftt":
                cells.setdefault((r["optimizer"], r["basis"], r["rank"]), []).append(r)
        stats = {
            k: (
                statistics.median(r["sinkhorn"] for r in v),
                statistics.median(r["train_s"] for r in v),
                v[0]["params"],
            )
            for k, v in cells.items()
        }
        best = min(stats, key=lambda k: stats[k][0])
        equal = [k for k, v in stats.items() if v[0] <= tolerance * sk_net]
        fmt = ", ".join(
            f"{k[0]}/{k[1]}/r{k[2]} ({stats[k][2] / p_net:.2f}, {stats[k][1] / t_net:.2f})"
            for k in sorted(equal, key=lambda k: stats[k][0])
        )
        small = any(stats[k][2] <= 0.5 * p_net for k in equal)
        fast = any(stats[k][1] <= 0.5 * t_net for k in equal)
        lines.append(
            f"| {dataset} | {med('data', 'sinkhorn'):.3g} | {med('prior', 'sinkhorn'):.3g} "
            f"| {sk_net:.3g} ({p_net}, {t_net:.1f}) "
            f"| {best[0]}/{best[1]}/r{best[2]}: {stats[best][0]:.3g} | {fmt or 'none'} "
            f"| {'yes' if small else 'no'} | {'yes' if fast else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--nll-points", type=int, default=128)
    parser.add_argument("--als-steps", type=int, default=4)
    parser.add_argument("--als-batch", type=int, default=1024)
    parser.add_argument("--als-prox", type=float, default=0.5)
    parser.add_argument("--ro-steps", type=int, default=40)
    parser.add_argument("--ro-batch", type=int, default=512)
    parser.add_argument("--adam-steps", type=int, default=300)
    parser.add_argument("--ddim-steps", type=int, default=50)
    parser.add_argument(
        "--only", nargs="+", default=None, help="FTT cells to run, as basis:rank:optimizer"
    )
    parser.add_argument("--uci-root", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON rows (default: print only)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--report", type=Path, default=None, help="print the tables of a JSON")
    args = parser.parse_args(argv)
    if args.report is not None:
        rows = json.loads(args.report.read_text())["rows"]
        sys.stdout.write(summary(rows) + report(rows))
        return 0
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        uci_root = args.uci_root
        if uci_root is None and any(d in ("power", "gas", "hepmass") for d in args.datasets):
            uci_root = Path(tmp)
            write_standins(uci_root, args.datasets)
        rows = []
        for dataset in args.datasets:
            rows += run_dataset(dataset, args.seeds, args, uci_root or Path(tmp))
    if args.out is not None:
        payload = {
            "uci_files": "real (" + str(args.uci_root) + ")" if args.uci_root else "stand-ins",
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
