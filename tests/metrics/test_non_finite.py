"""Non-finite samples never become a finite number: every metric raises, naming the count.

Before this guard, one NaN among 64 samples gave ``w2 = 0`` (POT's exact solver returns 0 on a
NaN cost matrix) and ``diffkit evaluate`` printed it with exit status 0.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffkit.metrics import FID, KID, MMD, NLL, W2, GaussianW2, Sinkhorn
from diffkit.metrics.base import NonFiniteSamplesError, SampleMetric, count_non_finite
from diffkit.metrics.features import RandomConvFeatures


def _points(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _features() -> RandomConvFeatures:
    return RandomConvFeatures(in_channels=3, num_features=6, seed=0)


#: name -> (metric factory, sample maker)
METRICS: dict[str, tuple[Callable[[], SampleMetric], Callable[[int, int], torch.Tensor]]] = {
    "w2": (W2, _points),
    "sinkhorn": (Sinkhorn, _points),
    "mmd": (MMD, _points),
    "gaussian_w2": (GaussianW2, _points),
    "gaussian_w2_target": (lambda: GaussianW2(mean=[0.0, 0.0], cov=[[1, 0], [0, 1]]), _points),
    "fid": (lambda: FID(feature=_features()), _images),
    "kid": (lambda: KID(feature=_features(), subsets=3, subset_size=10), _images),
}


def _spoil(x: torch.Tensor, rows: list[int], value: float) -> torch.Tensor:
    x = x.clone()
    for r in rows:
        x.view(x.shape[0], -1)[r, 1] = value
    return x


@pytest.mark.parametrize("name", list(METRICS))
def test_clean_samples_give_a_finite_value(name) -> None:
    make, samples = METRICS[name]
    metric = make()
    metric.update(samples(24, 0), samples(24, 1))
    assert torch.isfinite(torch.as_tensor(metric.compute()["value"]))


SPOILS = [
    ("generated", [5], float("nan")),
    ("generated", [0, 7, 9], float("inf")),
    ("reference", [3], float("-inf")),
]
CASES = [
    (name, *spoil)
    for name in METRICS
    for spoil in SPOILS
    if not (name == "gaussian_w2_target" and spoil[0] == "reference")  # no reference samples
]


@pytest.mark.parametrize(("name", "side", "rows", "value"), CASES)
def test_non_finite_samples_raise_with_their_count(name, side, rows, value) -> None:
    make, samples = METRICS[name]
    metric = make()
    gen, ref = samples(24, 0), samples(24, 1)
    if side == "generated":
        gen = _spoil(gen, rows, value)
    else:
        ref = _spoil(ref, rows, value)
    metric.update(gen[:12], ref)  # two shards: the count adds up over updates
    metric.update(gen[12:])
    label = "generated samples" if side == "generated" else "reference samples"
    with pytest.raises(NonFiniteSamplesError, match=rf"{len(rows)} of 24 {label} are not finite"):
        metric.compute()


def test_counts_merge_like_other_rank_states() -> None:
    """The counter is a sum state: a NaN on one rank's shard is seen after synchronisation."""
    rank0, rank1 = W2(), W2()
    rank0.update(_points(10, 0), _points(10, 1))
    rank1.update(_spoil(_points(10, 2), [4], float("nan")), _points(10, 3))
    rank0.merge_state(rank1)
    with pytest.raises(NonFiniteSamplesError, match="1 of 20 generated samples"):
        rank0.compute()
    assert count_non_finite(torch.tensor([[0.0, float("nan")], [1.0, 2.0]])) == 1


def test_nll_raises_on_non_finite_data_and_on_a_non_finite_likelihood() -> None:
    from diffkit.sdes.exact import ExactScoreModel, Gaussian
    from diffkit.sdes.vp import VPSDE

    sde = VPSDE()
    model = ExactScoreModel(Gaussian(torch.zeros(2), torch.ones(2)), sde, target="eps")
    data = _points(4, 0)
    metric = NLL(solver="rk4", steps=2).bind(sde, model)
    metric.update(data)
    assert torch.isfinite(metric.compute()["value"])
    metric = NLL(solver="rk4", steps=2).bind(sde, model)
    metric.update(_spoil(data, [1], float("nan")))
    with pytest.raises(NonFiniteSamplesError, match="1 of 4 held-out data points"):
        metric.compute()

    def nan_model(u, t):  # a diverged score model: NaN everywhere
        out = model(u, t)
        return dataclasses.replace(out, raw=out.raw * float("nan"), _cache={})

    metric = NLL(solver="rk4", steps=2).bind(sde, nan_model)
    metric.update(data)
    with pytest.raises(NonFiniteSamplesError, match="likelihood of 4 of 4 held-out data points"):
        metric.compute()


def test_evaluate_on_samples_with_one_nan_exits_non_zero(tmp_path: Path, capsys) -> None:
    from diffkit.cli.main import main

    x = _points(64, 0).float()
    x[17, 0] = float("nan")
    source = tmp_path / "samples.pt"
    torch.save({"x": x}, source)
    code = main(["evaluate", str(source), "--metrics", "[w2, mmd]", "--data", "toy2d"])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert "w2: 1 of 64 generated samples are not finite" in err
    assert "w2 " not in out  # no number printed


def test_evaluation_callback_logs_nan_and_warns_instead_of_a_number(tmp_path: Path) -> None:
    """During training a diverged sampler is reported (NaN and a warning), not a crash."""
    import functools

    import lightning as L

    from diffkit.callbacks.evaluation import MetricEvaluation
    from diffkit.data.toy2d import Toy2DDataModule
    from diffkit.denoisers.resnet import ResNetMLP
    from diffkit.module import DiffusionModule
    from diffkit.samplers.ddim import DDIM
    from diffkit.sdes.vp import VPSDE

    module = DiffusionModule(
        VPSDE(),
        functools.partial(ResNetMLP, width=8, depth=1, emb_dim=8),
        sampler=DDIM(steps=2),
        data_shape=(2,),
    )
    callback = MetricEvaluation([W2()], every_n_epochs=1, num_samples=16, on_train_end=False)

    def nan_samples(pl_module, start, stop, rank):
        return _spoil(_points(stop - start, rank), [2], float("nan")).float(), 2

    callback.generate = nan_samples
    dm = Toy2DDataModule("moons", num_train=64, num_val=16, num_test=16, batch_size=64)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
    )
    with pytest.warns(UserWarning, match="w2: 1 of 16 generated samples are not finite"):
        trainer.fit(module, datamodule=dm)
    assert torch.isnan(torch.tensor(callback.history[-1]["eval/w2"]))
