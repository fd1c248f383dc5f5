"""The vector datasets of the tensor-train study: Gaussian, 3-D swiss roll, digits as 64-D
vectors, and UCI POWER / GAS / HEPMASS loaded from small generated files in MAF's formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffkit.data.gaussian import GaussianDataModule
from diffkit.data.images import DatasetNotFoundError
from diffkit.data.sklearn_vectors import Digits64DataModule, SwissRoll3DDataModule
from diffkit.data.uci import (
    GasDataModule,
    HepmassDataModule,
    PowerDataModule,
    preprocess_gas,
    preprocess_hepmass,
    preprocess_power,
)
from diffkit.testing.uci_files import gas_table, write_gas, write_hepmass, write_power


def test_gaussian_moments_and_validation() -> None:
    dm = GaussianDataModule(
        mean=[1.0, -2.0, 0.0], cov=[[2, 0.5, 0], [0.5, 1, 0], [0, 0, 0.5]], num_train=20000
    )
    dm.setup()
    x = dm.split("train").x.double()
    assert dm.data_shape == (3,)
    torch.testing.assert_close(x.mean(0), dm.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), dm.cov, atol=0.06, rtol=0)
    assert dm.exact_distribution() is None
    assert GaussianDataModule(mean=[0.0, 1.0], cov=None).exact_distribution() is not None
    with pytest.raises(ValueError, match="positive definite"):
        GaussianDataModule(mean=[0.0, 0.0], cov=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(ValueError, match="2 x 2"):
        GaussianDataModule(mean=[0.0, 0.0], cov=[[1.0]])


def test_swiss_roll_3d_lies_on_the_roll_and_digits64_range() -> None:
    dm = SwissRoll3DDataModule(noise=0.0, num_train=500, num_val=10, num_test=50)
    dm.setup()
    x = dm.split("train").x.double() * 5.0
    a = torch.sqrt(x[:, 0] ** 2 + x[:, 2] ** 2)  # radius equals the angle on the roll
    torch.testing.assert_close(
        torch.atan2(x[:, 2], x[:, 0]) % (2 * np.pi), a % (2 * np.pi), atol=1e-4, rtol=0
    )
    assert dm.reference_samples(7).shape == (7, 3)
    dg = Digits64DataModule(num_val=50, num_test=100)
    dg.setup()
    train, val, test = (dg.split(s).x for s in ("train", "val", "test"))
    assert train.shape == (1797 - 150, 64) and val.shape == (50, 64) and test.shape == (100, 64)
    assert train.min() >= -1 and train.max() <= 1
    # dequantised: every value sits in its level's bin (k + u) / 17
    k = torch.floor((train.double() + 1) * 17 / 2)
    assert k.min() >= 0 and k.max() <= 16
    assert torch.equal(dg.reference_samples(5), dg.reference_samples(5))


def test_power_preprocessing_follows_maf(tmp_path) -> None:
    write_power(tmp_path, n=3000)
    raw = np.load(tmp_path / "power" / "data.npy")
    train, val, test = preprocess_power(raw)
    assert (train.shape[1], val.shape[1], test.shape[1]) == (6, 6, 6)
    assert test.shape[0] == 300 and val.shape[0] == 270 and train.shape[0] == 2430
    both = np.vstack([train, val])
    np.testing.assert_allclose(both.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(both.std(0), 1, atol=1e-12)
    # the same rows as MAF's recipe: shuffle by RandomState(42), drop columns 1 and 3
    rng = np.random.RandomState(42)
    shuffled = raw.copy()
    rng.shuffle(shuffled)
    kept = np.delete(shuffled, [1, 3], axis=1)
    noise = np.hstack([rng.rand(3000, 1) * 0.01, rng.rand(3000, 1) * 0.001, rng.rand(3000, 3)])
    noise = noise[:, [1, 0, 2, 3, 4]]  # drawn voltage first, stored active power first
    noisy = kept + np.hstack([noise, np.zeros((3000, 1))])
    sd = np.vstack([noisy[:2430], noisy[2430:2700]]).std(0)
    np.testing.assert_allclose(test * sd, (noisy[2700:] - noisy[:2700].mean(0)), atol=1e-9)
    # the time column (last) gets no noise: its values are the raw ones, rescaled
    dm = PowerDataModule(root=str(tmp_path), max_train=1000)
    dm.setup()
    assert dm.split("train").x.shape == (1000, 6) and dm.data_shape == (6,)


def test_gas_preprocessing_removes_correlated_sensors() -> None:
    columns, values = gas_table(n=2000)
    train, val, test = preprocess_gas(columns, values)
    assert train.shape[1] == 8 and test.shape[0] == 200 and val.shape[0] == 180
    data = np.vstack([train, val, test])
    np.testing.assert_allclose(data.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(data.std(0, ddof=1), 1, atol=1e-12)
    assert (np.abs(np.corrcoef(data, rowvar=False) - np.eye(8)) < 0.98).all()
    with pytest.raises(ValueError, match="Time"):
        preprocess_gas(columns[1:], values[:, 1:])


def test_gas_datamodule_reads_the_pickle(tmp_path) -> None:
    write_gas(tmp_path, n=1000)
    dm = GasDataModule(root=str(tmp_path))
    dm.setup()
    assert dm.split("train").x.shape == (810, 8)


def test_hepmass_preprocessing_and_datamodule(tmp_path) -> None:
    write_hepmass(tmp_path, n_train=3000, n_test=800)
    dm = HepmassDataModule(root=str(tmp_path))
    dm.setup()
    train, val, test = (dm.split(s).x for s in ("train", "val", "test"))
    assert train.shape[1] == val.shape[1] == test.shape[1] == 21 == dm.data_shape[0]
    n_pos = train.shape[0] + val.shape[0]
    assert val.shape[0] == int(0.1 * n_pos)
    table = np.loadtxt(tmp_path / "hepmass" / "1000_train.csv", delimiter=",", skiprows=1)
    assert n_pos == int((table[:, 0] == 1).sum())
    # standardised by the positive training rows (train + validation before the split)
    both = torch.cat([train, val]).double()
    torch.testing.assert_close(
        both.mean(0), torch.zeros(21, dtype=torch.float64), atol=1e-5, rtol=0
    )
    ttable = np.loadtxt(tmp_path / "hepmass" / "1000_test.csv", delimiter=",", skiprows=1)
    _, _, te2 = preprocess_hepmass(table, ttable)
    assert te2.shape == (int((ttable[:, 0] == 1).sum()), 21)


@pytest.mark.parametrize(
    ("cls", "name"),
    [
        (PowerDataModule, "power/data.npy"),
        (GasDataModule, "ethylene_CO.pickle"),
        (HepmassDataModule, "1000_test.csv"),
    ],
)
def test_missing_uci_files_name_the_files_and_their_source(tmp_path, cls, name) -> None:
    dm = cls(root=str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match=r"zenodo\.org/record/1161203") as err:
        dm.setup()
    assert name in str(err.value)
    with pytest.raises(ValueError, match="download=true is not supported"):
        cls(root=str(tmp_path), download=True)
