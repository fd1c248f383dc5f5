"""The evaluation callback logs eval/<metric> and eval/<metric>_n, equal to a direct computation."""

from __future__ import annotations

import csv
import functools
import itertools
from pathlib import Path

import lightning as L
import pytest
import torch

from diffkit.callbacks.evaluation import MetricEvaluation, shard_bounds
from diffkit.metrics import NLL, W2, GaussianW2, Sinkhorn


def _module():
    from diffkit.denoisers.resnet import ResNetMLP
    from diffkit.module import DiffusionModule
    from diffkit.samplers.ddim import DDIM
    from diffkit.sdes.vp import VPSDE

    return DiffusionModule(
        VPSDE(),
        functools.partial(ResNetMLP, width=16, depth=1, emb_dim=8),
        sampler=DDIM(steps=5),
        data_shape=(2,),
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )


def test_shard_bounds_cover_everything_once() -> None:
    for n, world in [(10, 3), (101, 2), (5, 5)]:
        parts = [shard_bounds(n, r, world) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(parts))


@pytest.mark.slow
def test_callback_logs_metrics_with_sample_counts(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from diffkit.data.toy2d import Toy2DDataModule

    torch.manual_seed(0)
    dm = Toy2DDataModule("diamond", num_train=256, num_val=64, num_test=64, batch_size=128)
    module = _module()
    callback = MetricEvaluation(
        [W2(), Sinkhorn(reg=0.1), GaussianW2(), NLL(solver="rk4", steps=4)],
        every_n_epochs=1,
        num_samples=48,
        num_reference=40,
        seed=3,
        batch_size=20,
        on_train_end=False,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=CSVLogger(str(tmp_path)),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=dm)
    logged = callback.history[-1]
    for name in ("w2", "sinkhorn", "gaussian_w2", "nll"):
        assert f"eval/{name}" in logged and f"eval/{name}_n" in logged
    assert logged["eval/w2_n"] == 48 and logged["eval/w2_n_reference"] == 40
    assert logged["eval/nll_n"] == 40 and logged["eval/nll_nfe"] == 16
    assert logged["eval/nfe"] == 5

    # the same numbers by hand: same generator, same batches, same reference draw
    g = torch.Generator().manual_seed(3 + 7919)
    x = torch.cat([module.sample(n, generator=g).x for n in (20, 20, 8)])
    ref = dm.reference_samples(40, generator=torch.Generator().manual_seed(4))
    w2 = W2()
    w2.update(x, ref)
    assert abs(w2.compute()["value"].item() - logged["eval/w2"]) < 1e-6

    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    keys = set().union(*(r.keys() for r in rows))
    assert {"eval/w2", "eval/w2_n", "eval/nll", "eval/nll_n"} <= keys


@pytest.mark.slow
@pytest.mark.ddp
def test_callback_under_ddp_fork_gathers_the_shards(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from diffkit.data.toy2d import Toy2DDataModule

    torch.manual_seed(0)
    dm = Toy2DDataModule("moons", num_train=128, num_val=32, num_test=32, batch_size=32)
    module = _module()
    callback = MetricEvaluation(
        [W2()], every_n_epochs=0, num_samples=30, num_reference=26, seed=5, batch_size=8
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",  # like ddp_spawn, without re-importing in the children
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=CSVLogger(str(tmp_path)),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, datamodule=dm)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        row = next(r for r in csv.DictReader(f) if r.get("eval/w2"))
    assert float(row["eval/w2_n"]) == 30 and float(row["eval/w2_n_reference"]) == 26

    # ddp_fork (like ddp_spawn) copies the trained weights back: redo each shard by hand
    shards = []
    for rank, (lo, hi) in enumerate([shard_bounds(30, r, 2) for r in range(2)]):
        g = torch.Generator().manual_seed(5 + 7919 * (rank + 1))
        sizes = [min(8, hi - s) for s in range(lo, hi, 8)]
        shards += [module.sample(n, generator=g).x for n in sizes]
    ref = dm.reference_samples(26, generator=torch.Generator().manual_seed(6))
    w2 = W2()
    w2.update(torch.cat(shards), ref)
    assert abs(w2.compute()["value"].item() - float(row["eval/w2"])) < 1e-5


def test_callback_and_metrics_by_short_name_in_a_config() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    from diffkit.registry import materialize_all

    materialize_all()
    parser = ArgumentParser()
    parser.add_argument("--callbacks", type=list[Callback], default=[])
    spec = (
        "[{class_path: evaluation, init_args: {every_n_epochs: 2, metrics: "
        "[w2, {class_path: sinkhorn, init_args: {reg: 0.1}}, w2]}}]"
    )
    cb = parser.instantiate(parser.parse_args(["--callbacks", spec])).callbacks[0]
    assert isinstance(cb, MetricEvaluation) and cb.every_n_epochs == 2
    assert list(cb.metrics) == ["w2", "sinkhorn", "w2_2"]
    assert isinstance(cb.metrics["sinkhorn"], Sinkhorn) and cb.metrics["sinkhorn"].reg == 0.1
