"""toy2d: the closed forms against sklearn's generators, seeding, splits and the diamond law."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.data.toy2d import TOY2D_NAMES, Toy2DDataModule, sample_toy2d


def _nearest(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from each row of ``a`` to the nearest row of ``b``."""
    return torch.cdist(a.double(), b.double()).min(dim=1).values


@pytest.mark.parametrize("name", ["moons", "circles", "swiss_roll"])
def test_noise_free_shapes_match_sklearn_generators(name):
    """sklearn's points (mapped by the documented affine) lie on our curves and vice versa."""
    sk = pytest.importorskip("sklearn.datasets")
    if name == "moons":
        pts, _ = sk.make_moons(n_samples=400, noise=0.0)
        ref = 2.0 * (torch.as_tensor(pts) - torch.tensor([0.5, 0.25], dtype=torch.float64))
    elif name == "circles":
        pts, _ = sk.make_circles(n_samples=400, noise=0.0, factor=0.5)
        ref = 2.0 * torch.as_tensor(pts)
    else:
        pts, _ = sk.make_swiss_roll(n_samples=400, noise=0.0, random_state=0)
        ref = torch.as_tensor(pts)[:, [0, 2]] / 5.0
    ours = sample_toy2d(name, 20000, 0.0, torch.Generator().manual_seed(0))
    # sklearn's points lie on our densely sampled curves, and ours near sklearn's (a 400-point
    # discretisation, so the reverse gap is the spacing of sklearn's points).
    assert _nearest(ref, ours).max() < 0.02
    assert _nearest(ours, ref).max() < 0.2


def test_checkerboard_is_uniform_on_the_dark_squares():
    x = sample_toy2d("checkerboard", 80000, 0.0, torch.Generator().manual_seed(1))
    assert x.min() >= -2 and x.max() <= 2
    cell = (x + 2).floor().long().clamp(max=3)
    assert bool(((cell[:, 0] + cell[:, 1]) % 2 == 0).all())
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).double()
    dark = counts[counts > 0]
    assert len(dark) == 8
    # Multinomial(80000, 1/8): relative std of a count is sqrt(7/80000) ~ 0.0094.
    assert (dark / 10000 - 1).abs().max() < 5 * math.sqrt(7 / 80000)
    # Uniform inside a cell: fractional parts have mean 1/2 and variance 1/12.
    frac = x + 2 - cell
    assert torch.allclose(frac.mean(0), torch.full((2,), 0.5, dtype=x.dtype), atol=0.01)
    assert torch.allclose(frac.var(0), torch.full((2,), 1 / 12, dtype=x.dtype), atol=0.005)


def test_diamond_matches_its_exact_mixture():
    dm = Toy2DDataModule("diamond")
    law = dm.exact_distribution()
    x = dm.reference_samples(40000).double()
    means, w = law.means, law.weights
    # Mixture moments: mean = sum w mu, covariance = sum w (s^2 I + mu mu^T) - mean mean^T.
    eye = torch.eye(2, dtype=torch.float64)
    mean = (w[:, None] * means).sum(0)
    comp = law.covs[:, None, None] * eye + means[:, :, None] * means[:, None]
    second = (w[:, None, None] * comp).sum(0)
    cov = second - mean[:, None] * mean[None]
    assert torch.allclose(x.mean(0), mean, atol=0.01)
    assert torch.allclose(torch.cov(x.T), cov, atol=0.01)
    # Every sample is within 6 std of a mean; the std around the nearest mean is 0.04.
    d = torch.cdist(x, means).min(dim=1).values
    assert d.max() < 6 * 0.04
    assert abs(float((d**2).mean()) / 2 - 0.04**2) < 0.1 * 0.04**2


@pytest.mark.parametrize("name", TOY2D_NAMES)
def test_splits_are_seeded_disjoint_draws_and_batches_are_dicts(name):
    a, b = Toy2DDataModule(name, num_train=512, batch_size=64), Toy2DDataModule(name, num_train=512)
    a.setup()
    b.setup()
    assert a.data_shape == (2,) and a.num_classes is None
    assert torch.equal(a.split("train").x, b.split("train").x)
    assert not torch.equal(a.split("train").x[:100], a.split("val").x[:100])
    assert not torch.equal(a.reference_samples(100), a.split("test").x[:100])
    assert torch.equal(a.reference_samples(100), b.reference_samples(100))
    g = torch.Generator().manual_seed(5)
    assert not torch.equal(a.reference_samples(100, generator=g), a.reference_samples(100))
    batch = next(iter(a.train_dataloader()))
    assert set(batch) == {"x"} and batch["x"].shape == (64, 2) and batch["x"].dtype == torch.float32
    assert len(a.train_dataloader()) == 512 // 64
    c = Toy2DDataModule(name, seed=1)
    c.setup()
    assert not torch.equal(a.split("train").x[:10], c.split("train").x[:10])


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="dataset must be one of moons, circles"):
        Toy2DDataModule("moon")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise must be"):
        Toy2DDataModule("diamond", noise=0.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Toy2DDataModule(batch_size=0)
