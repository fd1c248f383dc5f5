"""Functional tensor train vs ResNet-MLP at (about) equal parameter count on Gaussian mixtures.

For a 2-D and an 8-D Gaussian mixture (exact law from :mod:`diffkit.sdes.exact`), both denoisers
are trained with Adam on eps-DSM under the VP SDE (same batches, same times and noise), and the
tool reports, per (dataset, model):

* ``params``; ``fwd_bwd_ms``: median forward + backward time of one batch;
* ``val_excess``: validation DSM loss minus the loss of the *exact* score on the same fixed
  ``(x0, t, eps)`` (the irreducible part; 0 is perfect), at the end of training;
* ``time_to_target_s`` / ``steps_to_target``: wall time and steps until the validation excess
  first falls to ``target_frac`` times its initial value (the fixed loss target; ``–`` if never);
* ``w2`` / ``sinkhorn``: exact W2 (POT ``emd2``) and entropic OT cost between generated samples
  (Euler-Maruyama) and fresh data, next to the same numbers for the exact score (``exact`` rows:
  sampler error plus the finite-sample floor).

``--quick`` runs a few steps only (smoke test). Timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import ot
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_report import add_common_arguments, median, write_report

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.denoisers.tensor_train import TensorTrain
from diffkit.gaussian.score import ExactScoreModel
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.sdes.exact import GaussianMixture
from diffkit.sdes.vp import VPSDE


def mixture(dim: int, seed: int) -> GaussianMixture:
    """2-D: 8 components on a ring of radius 2; 8-D: 6 random means of norm ~2."""
    gen = torch.Generator().manual_seed(seed)
    if dim == 2:
        ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        means = 2.0 * torch.stack([ang.cos(), ang.sin()], -1)
        return GaussianMixture(torch.ones(8), means, torch.full((8,), 0.1**2))
    means = torch.randn(6, dim, generator=gen, dtype=torch.float64)
    means = 2.0 * means / means.norm(dim=-1, keepdim=True)
    return GaussianMixture(torch.ones(6), means, torch.full((6,), 0.3**2))


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def matched_resnet(spec: DenoiserSpec, budget: int, depth: int) -> ResNetMLP:
    """The ResNet-MLP of the given depth whose parameter count is closest to ``budget``."""
    best = None
    for width in range(4, 512, 2):
        net = ResNetMLP(spec, width=width, depth=depth, emb_dim=16)
        gap = abs(n_params(net) - budget)
        if best is None or gap < best[0]:
            best = (gap, width)
        if n_params(net) > budget:
            break
    return ResNetMLP(spec, width=best[1], depth=depth, emb_dim=16)


def fwd_bwd_ms(model: Parameterization, sde, loss, x: torch.Tensor, reps: int) -> float:
    times = []
    gen = torch.Generator().manual_seed(0)
    for _ in range(reps):
        t0 = time.perf_counter()
        loss(model, sde, x, generator=gen).loss.mean().backward()
        times.append(time.perf_counter() - t0)
    model.net.zero_grad(set_to_none=True)
    return 1e3 * median(times)


def ot_costs(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Exact W2 (network simplex) and the entropic OT cost (log-domain Sinkhorn, torch backend)."""
    x, y = x.double(), y.double()
    a = torch.full((x.shape[0],), 1.0 / x.shape[0], dtype=torch.float64)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64)
    cost = ot.dist(x, y)
    w2 = math.sqrt(float(ot.emd2(a, b, cost, numItermax=2_000_000)))
    sk = float(ot.sinkhorn2(a, b, cost, reg=0.05, method="sinkhorn_log", numItermax=500))
    return w2, sk


def run_dataset(dim: int, args, quick: bool) -> list[dict]:
    torch.manual_seed(0)
    sde = VPSDE()
    dist = mixture(dim, seed=1)
    spec = DenoiserSpec((dim,), (dim,), (dim,))
    loss = DenoisingScoreMatching(target="eps")

    def make_nets() -> dict[str, torch.nn.Module]:
        torch.manual_seed(0)  # the same initial weights for every residual setting
        if dim == 2:
            tt = TensorTrain(spec, rank=16, num_basis=32, time_basis=12)
        else:
            tt = TensorTrain(spec, rank=8, num_basis=16, time_basis=8)
        return {"tensor_train": tt, "resnet": matched_resnet(spec, n_params(tt), depth=2)}

    lrs = {"tensor_train": args.lr_tt, "resnet": args.lr_resnet}
    steps = 20 if quick else args.steps
    batch = 256
    gen_data = torch.Generator().manual_seed(2)
    x_val = dist.sample(1024 if quick else 4096, generator=gen_data).float()
    sigma_data = float(x_val.double().pow(2).mean().sqrt())  # RMS of the data (c_in, residual)
    t_val = 1e-5 + (1 - 1e-5) * torch.rand(x_val.shape[0], generator=gen_data, dtype=torch.float64)

    def val_loss(model) -> float:
        with torch.no_grad():
            g = torch.Generator().manual_seed(3)
            return loss(model, sde, x_val, generator=g, t=t_val).loss.mean().item()

    exact = ExactScoreModel(dist, sde, "score")
    exact_val = val_loss(exact)
    n_samp = 500 if quick else args.samples
    sampler = EulerMaruyama(steps=20 if quick else 200, denoise_final=True)
    reference = dist.sample(n_samp, generator=torch.Generator().manual_seed(4)).float()
    rows = []
    with torch.no_grad():
        res = sampler.sample(exact, sde, (n_samp, dim), generator=torch.Generator().manual_seed(5))
    w2, sk = ot_costs(res.x, reference)
    floor_w2, floor_sk = ot_costs(
        dist.sample(n_samp, generator=torch.Generator().manual_seed(6)).float(), reference
    )
    rows.append(
        {
            "dataset": f"gmm{dim}d",
            "model": "exact score",
            "w2": w2,
            "sinkhorn": sk,
            "val_excess": 0.0,
            "note": f"data-vs-data floor: W2 {floor_w2:.3g}, Sinkhorn {floor_sk:.3g}",
        }
    )
    configs = [(name, res) for res in args.residual for name in ("tensor_train", "resnet")]
    for name, residual in configs:
        net = make_nets()[name]
        model = Parameterization(sde, net, "eps", sigma_data=sigma_data, residual=residual)
        opt = torch.optim.Adam(net.parameters(), lr=lrs[name])
        gen = torch.Generator().manual_seed(7)
        init_excess = val_loss(model) - exact_val
        target = args.target_frac * init_excess
        hit_time, hit_step, train_time = None, None, 0.0
        for step in range(1, steps + 1):
            x0 = dist.sample(batch, generator=gen).float()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss(model, sde, x0, generator=gen).loss.mean().backward()
            opt.step()
            train_time += time.perf_counter() - t0
            evaluate = hit_step is None and (step % args.eval_every == 0 or step == steps)
            if evaluate and val_loss(model) - exact_val <= target:
                hit_time, hit_step = train_time, step
        final_excess = val_loss(model) - exact_val
        with torch.no_grad():
            res = sampler.sample(
                model, sde, (n_samp, dim), generator=torch.Generator().manual_seed(5)
            )
        w2, sk = ot_costs(res.x, reference)
        x_b = dist.sample(batch, generator=torch.Generator().manual_seed(8)).float()
        rows.append(
            {
                "dataset": f"gmm{dim}d",
                "model": name,
                "residual": residual,
                "sigma_data": sigma_data,
                "params": n_params(net),
                "config": (
                    f"rank {net.ranks[1]}, m {net.x_basis.size}, time basis {net.t_basis.size}"
                    if name == "tensor_train"
                    else f"width {net.inp.out_features}, depth {len(net.blocks)}"
                ),
                "lr": lrs[name],
                "steps": steps,
                "train_s": train_time,
                "fwd_bwd_ms": fwd_bwd_ms(model, sde, loss, x_b, 3 if quick else 20),
                "val_excess": final_excess,
                "init_excess": init_excess,
                "steps_to_target": hit_step,
                "time_to_target_s": hit_time,
                "w2": w2,
                "sinkhorn": sk,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per model")
    parser.add_argument("--samples", type=int, default=2000, help="samples for W2 / Sinkhorn")
    parser.add_argument("--eval-every", type=int, default=50, help="validation period (steps)")
    parser.add_argument("--target-frac", type=float, default=0.1, help="fixed loss target")
    parser.add_argument("--lr-tt", type=float, default=5e-3)
    parser.add_argument("--lr-resnet", type=float, default=2e-3)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8])
    parser.add_argument(
        "--residual",
        nargs="+",
        choices=("none", "gaussian"),
        default=["none", "gaussian"],
        help="Parameterization.residual settings to compare (each trains fresh networks)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows: list[dict] = []
    for dim in args.dims:
        rows += run_dataset(dim, args, args.quick)
    columns = [
        "dataset",
        "model",
        "residual",
        "params",
        "config",
        "fwd_bwd_ms",
        "train_s",
        "steps_to_target",
        "time_to_target_s",
        "val_excess",
        "w2",
        "sinkhorn",
    ]
    write_report(
        "bench_denoisers",
        args.out,
        title="Denoisers: functional tensor train vs ResNet-MLP (VP, eps-DSM, Adam)",
        rows=rows,
        columns=columns,
        settings={
            "steps": 20 if args.quick else args.steps,
            "batch": 256,
            "target_frac": args.target_frac,
            "sampler": "euler_maruyama (200 steps, final denoising)",
            "threads": 1,
        },
        notes=[
            "residual: Parameterization.residual; 'gaussian' = the network learns the correction "
            "to the exact eps of N(0, sigma_data^2 I) data. sigma_data (input scaling and "
            "residual) is the RMS of the validation data. Both settings start from the same "
            "initial weights.",
            "val_excess: DSM validation loss minus that of the exact score on the same fixed "
            "(x0, t, eps); steps/time_to_target: first evaluation with excess <= target_frac x "
            "the initial excess.",
            "w2: exact empirical W2 (POT emd2); sinkhorn: entropic OT cost (reg 0.05, squared "
            "Euclidean cost). 'exact score' rows: same sampler with the closed-form score.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
