"""Run every metric on a contiguous shard of fixed data in a gloo process group.

:func:`run_rank` (forked by the test, or ``python ddp_metrics_worker.py RANK WORLD PORT OUT``):
rank 0 saves ``{name: result}`` to ``OUT``; :func:`run_metrics` with ``world = 1`` runs
in-process. Used by ``test_metrics_ddp.py``: every metric must give the same value on 2 ranks
as on 1.
"""

from __future__ import annotations

import os
import sys

import torch


def _shard(x: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    bounds = [round(i * x.shape[0] / world) for i in range(world + 1)]
    return x[bounds[rank] : bounds[rank + 1]]


def run_metrics(rank: int, world: int) -> dict[str, dict[str, torch.Tensor]]:
    from diffkit.gaussian.score import ExactScoreModel
    from diffkit.metrics import FID, KID, MMD, NLL, W2, GaussianW2, Sinkhorn
    from diffkit.metrics.features import RandomConvFeatures
    from diffkit.sdes.exact import Gaussian
    from diffkit.sdes.vp import VPSDE

    g = torch.Generator().manual_seed(0)
    gen = torch.randn(101, 3, generator=g, dtype=torch.float64)  # odd: uneven shards
    ref = torch.randn(90, 3, generator=g, dtype=torch.float64) * 1.2 + 0.3
    img_gen = torch.rand(41, 3, 8, 8, generator=g) * 2 - 1
    img_ref = (torch.rand(40, 3, 8, 8, generator=g) * 1.6 - 0.6).clamp(-1, 1)
    net = RandomConvFeatures(num_features=6, seed=2)
    sde = VPSDE()
    dist = Gaussian(torch.tensor([0.2, -0.3, 0.5]), torch.tensor([0.5, 1.0, 0.2]))
    out: dict[str, dict[str, torch.Tensor]] = {}
    point_metrics = {
        "w2": W2(),
        "sinkhorn": Sinkhorn(reg=0.05),
        "sinkhorn_div": Sinkhorn(reg=0.05, kind="divergence"),
        "gaussian_w2": GaussianW2(),
        "mmd": MMD(),
    }
    for name, metric in point_metrics.items():
        metric.update(_shard(gen, rank, world), _shard(ref, rank, world))
        out[name] = metric.compute()
    for name, metric in {
        "fid": FID(feature=net),
        "kid": KID(feature=net, subsets=3, subset_size=20),
    }.items():
        metric.update(_shard(img_gen, rank, world), _shard(img_ref, rank, world))
        out[name] = metric.compute()
    nll = NLL(divergence="exact", solver="rk4", steps=20).bind(sde, ExactScoreModel(dist, sde))
    nll.update(_shard(gen[:9], rank, world))
    out["nll"] = nll.compute()
    return out


def run_rank(rank: int, world: int, port: str, path: str) -> None:
    """One rank: join the gloo group, run the metrics, rank 0 saves the results to ``path``."""
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = port
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = run_metrics(rank, world)
        if rank == 0:
            torch.save(out, path)
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    run_rank(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
