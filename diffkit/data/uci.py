"""UCI POWER (6-D), GAS (8-D) and HEPMASS (21-D) with the preprocessing of Papamakarios, Pavlakou
& Murray, "Masked Autoregressive Flow for Density Estimation" (NeurIPS 2017, arXiv 1705.07057),
the splits every density-estimation paper since reports log-likelihoods on.

The files are placed by the user (``root``; nothing is downloaded): they are the preprocessed
copies published with MAF (Zenodo record 1161203, ``data.tar.gz``), laid out as

* ``power/data.npy``: the UCI "Individual household electric power consumption" table as an
  ``(N, 8)`` float array (global active power, global reactive power, voltage, global intensity,
  sub-meterings 1-3, time of day);
* ``gas/ethylene_CO.pickle``: a pandas DataFrame of the UCI "Gas sensor array under dynamic gas
  mixtures" ethylene-CO recording (columns ``Time``, ``Meth``, ``Eth`` and 16 sensors);
* ``hepmass/1000_train.csv``, ``hepmass/1000_test.csv``: the UCI HEPMASS "1000" files (first
  column the class label, then 27 features; the test file carries one extra trailing column).

Preprocessing (re-derived from the paper's description and its published loaders' conventions):

* **POWER**: rows shuffled by ``numpy.random.RandomState(42)``; the reactive power and the
  global intensity columns dropped; uniform dequantisation noise added column-wise (global active
  power ``U[0, 0.001)``, voltage ``U[0, 0.01)``, the three sub-meterings ``U[0, 1)``, time none;
  drawn in the order voltage, active power, sub-meterings from the same generator); the last 10 %
  is the test split, the last 10 % of the rest validation; standardised by the mean and std of
  train + validation.
* **GAS**: ``Meth``, ``Eth`` and ``Time`` dropped; then, while some column has a Pearson
  correlation above 0.98 with another, the first such column is dropped; the table is
  standardised (pandas ``std``, ``ddof = 1``) and split in file order: last 10 % test, last 10 %
  of the rest validation.
* **HEPMASS**: positive-class rows (label 1) only, the label dropped (and the test file's extra
  last column); standardised by the training mean and std; features whose smallest training value
  occurs more than 5 times dropped (MAF's test, which removes the 6 features with a discrete
  component); the last 10 % of the training rows is validation.

The loaders are tested on small generated files in these formats; the study in
``docs/tensor_train.md`` ran on such stand-ins (see there how to run it on the real files).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffkit.data.images import DatasetNotFoundError
from diffkit.data.tabular import ArraySplitsDataModule

__all__ = [
    "GasDataModule",
    "HepmassDataModule",
    "PowerDataModule",
    "preprocess_gas",
    "preprocess_hepmass",
    "preprocess_power",
    "read_csv_table",
]

_SOURCE = (
    "They are the MAF copies of the UCI data (Papamakarios et al. 2017): download data.tar.gz "
    "from https://zenodo.org/record/1161203, unpack it, and point `data.init_args.root` at its "
    "'data' directory (the one holding power/, gas/, hepmass/)."
)


def _split_tail(data: np.ndarray, frac: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    n_tail = int(frac * data.shape[0])
    return data[: data.shape[0] - n_tail], data[data.shape[0] - n_tail :]


def preprocess_power(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's POWER splits from the ``(N, 8)`` table (see the module docstring)."""
    if raw.ndim != 2 or raw.shape[1] != 8:
        raise ValueError(f"power: data.npy must be an (N, 8) table, got shape {raw.shape}")
    rng = np.random.RandomState(42)
    data = np.array(raw, dtype=np.float64)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, [1, 3], axis=1)  # reactive power, global intensity
    voltage = 0.01 * rng.rand(n, 1)
    active = 0.001 * rng.rand(n, 1)
    metering = rng.rand(n, 3)
    data = data + np.hstack([active, voltage, metering, np.zeros((n, 1))])
    rest, test = _split_tail(data)
    train, val = _split_tail(rest)
    both = np.vstack([train, val])
    mu, sd = both.mean(axis=0), both.std(axis=0)
    return (train - mu) / sd, (val - mu) / sd, (test - mu) / sd


def preprocess_gas(
    columns: Sequence[str], values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's GAS splits from the ethylene-CO table (its column names and ``(N, C)`` values; see
    the module docstring)."""
    columns = list(columns)
    missing = [c for c in ("Meth", "Eth", "Time") if c not in columns]
    if missing:
        raise ValueError(f"gas: ethylene_CO.pickle lacks the columns {missing}")
    keep = [j for j, c in enumerate(columns) if c not in ("Meth", "Eth", "Time")]
    data = np.asarray(values, dtype=np.float64)[:, keep]
    while True:
        counts = (np.corrcoef(data, rowvar=False) > 0.98).sum(axis=1)
        over = np.flatnonzero(counts > 1)
        if over.size == 0:
            break
        data = np.delete(data, over[0], axis=1)
    data = (data - data.mean(axis=0)) / data.std(axis=0, ddof=1)
    rest, test = _split_tail(data)
    train, val = _split_tail(rest)
    return train, val, test


def preprocess_hepmass(
    train_table: np.ndarray, test_table: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's HEPMASS splits from the two ``1000_*.csv`` tables as arrays (label first; see the
    module docstring)."""
    train = train_table[train_table[:, 0] == 1, 1:]
    test = test_table[test_table[:, 0] == 1, 1:-1]
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"hepmass: {train.shape[1]} training features but {test.shape[1]} test features "
            "after dropping the label (and the test file's last column)"
        )
    mu, sd = train.mean(axis=0), train.std(axis=0, ddof=1)
    train, test = (train - mu) / sd, (test - mu) / sd
    keep = [j for j, col in enumerate(train.T) if np.count_nonzero(col == col.min()) <= 5]
    train, test = train[:, keep], test[:, keep]
    train, val = _split_tail(train)
    return train, val, test


def read_csv_table(path: Path) -> np.ndarray:
    """A numeric CSV with one header line as a float64 array (no pandas needed); all-empty
    columns (a trailing delimiter on every line) are dropped."""
    table = np.genfromtxt(path, delimiter=",", skip_header=1, dtype=np.float64, ndmin=2)
    return table[:, ~np.isnan(table).all(axis=0)]


class _UCIDataModule(ArraySplitsDataModule):
    """Shared: ``root``, ``download`` (refused: the files are placed by the user), ``max_train``."""

    files: tuple[str, ...] = ()
    dim: int = 0

    def __init__(
        self,
        root: str,
        download: bool,
        batch_size: int,
        max_train: int | None,
        seed: int,
    ) -> None:
        super().__init__(batch_size, max_train, seed)
        if download:
            raise ValueError(
                f"{self.name}: download=true is not supported; place the files yourself. " + _SOURCE
            )
        self.root = root
        self.data_shape = (self.dim,)
        self.num_classes = None

    def expected_files(self) -> list[Path]:
        base = Path(self.root).expanduser()
        return [base / f for f in self.files]

    def _check_files(self) -> None:
        missing = [p for p in self.expected_files() if not p.is_file()]
        if missing:
            root = Path(self.root).expanduser().resolve()
            listed = "\n".join(f"  {p}" for p in self.expected_files())
            raise DatasetNotFoundError(
                f"{self.name}: {len(missing)} dataset file(s) are missing under root '{root}'. "
                f"Expected these files:\n{listed}\n{_SOURCE}"
            )

    def prepare_data(self) -> None:
        self._check_files()

    def load_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        self._check_files()
        splits = self.preprocess()
        for name, part in zip(("train", "val", "test"), splits, strict=True):
            if part.shape[1] != self.dim:
                raise ValueError(
                    f"{self.name}: the {name} split has {part.shape[1]} columns after MAF's "
                    f"preprocessing, expected {self.dim}; are these the MAF files?"
                )
        return tuple(torch.from_numpy(np.ascontiguousarray(p)) for p in splits)  # type: ignore[return-value]

    def preprocess(self) -> Sequence[np.ndarray]:
        raise NotImplementedError


class PowerDataModule(_UCIDataModule):
    """UCI POWER, 6-D (MAF preprocessing; ``root/power/data.npy``).

    Args:
        root: directory holding ``power/data.npy``.
        download: must stay ``false`` (the files are placed by the user).
        batch_size: training and evaluation batch size.
        max_train: keep this many training rows (a seeded subset), or all.
        seed: seed of the subset and of the epoch shuffles.
    """

    name, dim, files = "power", 6, ("power/data.npy",)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 512,
        max_train: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(root, download, batch_size, max_train, seed)
        self.save_hyperparameters()

    def preprocess(self) -> Sequence[np.ndarray]:
        return preprocess_power(np.load(self.expected_files()[0]))


class GasDataModule(_UCIDataModule):
    """UCI GAS, 8-D (MAF preprocessing; ``root/gas/ethylene_CO.pickle``).

    Args:
        root: directory holding ``gas/ethylene_CO.pickle``.
        download: must stay ``false``.
        batch_size: training and evaluation batch size.
        max_train: keep this many training rows (a seeded subset), or all.
        seed: seed of the subset and of the epoch shuffles.
    """

    name, dim, files = "gas", 8, ("gas/ethylene_CO.pickle",)

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 512,
        max_train: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(root, download, batch_size, max_train, seed)
        self.save_hyperparameters()

    def preprocess(self) -> Sequence[np.ndarray]:
        try:
            import pandas as pd
        except ImportError:
            raise ImportError(
                "gas: ethylene_CO.pickle is a pickled pandas DataFrame; reading it needs pandas "
                "(pip install 'diffkit[uci]' or pip install pandas)"
            ) from None
        frame = pd.read_pickle(self.expected_files()[0])
        return preprocess_gas([str(c) for c in frame.columns], frame.to_numpy(np.float64))


class HepmassDataModule(_UCIDataModule):
    """UCI HEPMASS, 21-D (MAF preprocessing; ``root/hepmass/1000_{train,test}.csv``).

    Args:
        root: directory holding ``hepmass/1000_train.csv`` and ``hepmass/1000_test.csv``.
        download: must stay ``false``.
        batch_size: training and evaluation batch size.
        max_train: keep this many training rows (a seeded subset), or all.
        seed: seed of the subset and of the epoch shuffles.
    """

    name, dim = "hepmass", 21
    files = ("hepmass/1000_train.csv", "hepmass/1000_test.csv")

    def __init__(
        self,
        root: str = "data",
        download: bool = False,
        batch_size: int = 512,
        max_train: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(root, download, batch_size, max_train, seed)
        self.save_hyperparameters()

    def preprocess(self) -> Sequence[np.ndarray]:
        train_path, test_path = self.expected_files()
        return preprocess_hepmass(read_csv_table(train_path), read_csv_table(test_path))
