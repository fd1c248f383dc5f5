"""The Gaussian-mixture datamodule against its closed form (means, moments, density)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from diffkit.data.gmm import GaussianMixtureDataModule, diamond_means


def test_diamond_matches_the_cld_sgm_toy() -> None:
    dm = GaussianMixtureDataModule(preset="diamond")
    assert dm.data_shape == (2,) and dm.num_components == 9 and dm.std == 0.04
    r = 1 / math.sqrt(2)
    expected = {(r, 0.0), (-r, 0.0), (0.0, r), (0.0, -r), (0.0, 0.0)}
    got = {(round(a, 6), round(b, 6)) for a, b in diamond_means().tolist()}
    assert {(round(a, 6), round(b, 6)) for a, b in expected} <= got
    # (p, q) -> ((p + q)/sqrt 2, (q - p)/sqrt 2) for the grid {-0.5, 0, 0.5}^2
    grid = torch.tensor([[p, q] for p in (-0.5, 0.0, 0.5) for q in (-0.5, 0.0, 0.5)])
    mapped = torch.stack([(grid[:, 0] + grid[:, 1]) * r, (grid[:, 1] - grid[:, 0]) * r], 1)
    torch.testing.assert_close(diamond_means().float(), mapped, atol=1e-7, rtol=0)


@pytest.mark.parametrize(
    ("preset", "dim", "k", "std"),
    [("diamond", None, None, None), ("ring", 3, 5, 0.1), ("random", 4, 3, 0.3)],
)
def test_split_moments_match_the_mixture(preset: str, dim: int | None, k: int | None, std) -> None:
    dm = GaussianMixtureDataModule(
        preset=preset, dim=dim, num_components=k, std=std, num_train=40_000, seed=3
    )
    x = dm.split("train").x.double()
    mu = dm.means.mean(0)
    centred = dm.means - mu
    cov = centred.T @ centred / dm.num_components + dm.std**2 * torch.eye(
        dm.dim, dtype=torch.float64
    )
    n = x.shape[0]
    # mean: within 5 standard errors per coordinate; covariance: within 5 SE of the 4th moment
    se = (cov.diagonal() / n).sqrt()
    assert ((x.mean(0) - mu).abs() <= 5 * se).all()
    emp = torch.cov(x.T)
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / n).sqrt()
    assert ((emp - cov).abs() <= 5 * se_cov + 1e-12).all()


def test_exact_distribution_density_matches_scipy() -> None:
    dm = GaussianMixtureDataModule(preset="ring", dim=3, num_components=4, std=0.2, seed=1)
    law = dm.exact_distribution()
    x = dm.reference_samples(50).double()
    ref = sum(
        multivariate_normal(mean=m.numpy(), cov=0.04 * np.eye(3)).pdf(x.numpy()) / 4
        for m in dm.means
    )
    torch.testing.assert_close(law.log_prob(x), torch.as_tensor(ref).log(), rtol=1e-10, atol=1e-10)


def test_splits_are_seeded_and_independent() -> None:
    a, b = GaussianMixtureDataModule(seed=7), GaussianMixtureDataModule(seed=7)
    assert torch.equal(a.split("train").x, b.split("train").x)
    assert torch.equal(a.reference_samples(64), b.reference_samples(64))
    assert not torch.equal(a.split("train").x[:64], a.split("val").x[:64])
    assert not torch.equal(a.split("test").x[:64], a.reference_samples(64))
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(a.reference_samples(64, generator=g), a.reference_samples(64))
    c = GaussianMixtureDataModule(seed=8)
    assert not torch.equal(a.split("train").x, c.split("train").x)


def test_batches_are_dicts_with_labels_when_asked() -> None:
    dm = GaussianMixtureDataModule(preset="ring", num_components=5, labels=True, batch_size=32)
    assert dm.num_classes == 5
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (32, 2) and batch["x"].dtype == torch.float32
    assert batch["y"].shape == (32,) and int(batch["y"].min()) >= 0 and int(batch["y"].max()) < 5
    # labels are the components: each point is nearest its own mean (std 0.05, radius 1)
    nearest = torch.cdist(batch["x"].double(), dm.means).argmin(1)
    assert torch.equal(nearest, batch["y"])
    unlabeled = GaussianMixtureDataModule()
    assert "y" not in next(iter(unlabeled.train_dataloader())) and unlabeled.num_classes is None


def test_shuffle_depends_on_epoch_only() -> None:
    dm = GaussianMixtureDataModule(num_train=64, batch_size=16)
    loader = dm.train_dataloader()
    first = torch.cat([b["x"] for b in loader])
    loader.sampler.set_epoch(1)
    second = torch.cat([b["x"] for b in loader])
    loader.sampler.set_epoch(0)
    again = torch.cat([b["x"] for b in loader])
    assert torch.equal(first, again) and not torch.equal(first, second)
    assert torch.equal(first.sort(0).values, second.sort(0).values)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"preset": "diamond", "dim": 3}, ["dim=3", "ring"]),
        ({"preset": "ring", "dim": 1}, ["dim >= 2"]),
        ({"preset": "random", "std": -1.0}, ["std"]),
        ({"batch_size": 0}, ["batch_size"]),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        GaussianMixtureDataModule(**kwargs)
    for word in words:
        assert word in str(info.value)
