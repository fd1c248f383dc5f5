"""Gaussian-mixture data in any dimension, with its exact law (the default toy).

Presets: ``diamond`` is CLD-SGM's 9-component 2-D toy (means on the grid ``{-0.5, 0, 0.5}^2``
rotated by 45 degrees, std 0.04, equal weights) [CLD, 2112.07068;
docs/background/sdes.md#exact-scores]; ``ring`` puts the
means evenly on a circle in the first two coordinates; ``random`` draws them from
``N(0, radius^2 I)`` with the datamodule's seed. Every split is drawn from the exact law with its
own seeded generator, so train, validation and held-out data are independent and reproducible.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from diffkit.data.base import DiffusionDataModule
from diffkit.data.shuffle import epoch_shuffle

__all__ = ["GaussianMixtureDataModule", "TensorDictDataset", "diamond_means"]

Preset = Literal["diamond", "ring", "random"]
_SPLITS = {"train": 0, "val": 1, "test": 2, "reference": 3, "means": 4}


def diamond_means() -> Tensor:
    """The 9 'diamond' means ``(9, 2)`` float64: the grid ``{-0.5, 0, 0.5}^2`` (rows) times
    ``R = [[1, -1], [1, 1]] / sqrt(2)``."""
    g = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)  # rows (p, q)
    rot = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=torch.float64) / math.sqrt(2.0)
    return grid @ rot


class TensorDictDataset(Dataset):
    """Rows of ``x`` (and ``y``) fetched a whole batch at a time (``__getitems__``)."""

    def __init__(self, x: Tensor, y: Tensor | None = None) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict[str, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        batch = {"x": self.x[idx]}
        if self.y is not None:
            batch["y"] = self.y[idx]
        return batch


def collate_dict(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The batch is already collated by :meth:`TensorDictDataset.__getitems__`."""
    return batch


class TensorSplitsDataModule(DiffusionDataModule):
    """Datamodules whose splits are in-memory :class:`TensorDictDataset` s from ``split(name)``
    (``train`` | ``val`` | ``test``); subclasses set ``batch_size`` and ``seed``. Training
    batches are drawn by :func:`~diffkit.data.shuffle.epoch_shuffle` (seeded per epoch, sharded
    across ranks) and drop the last partial batch."""

    batch_size: int
    seed: int

    def split(self, name: Literal["train", "val", "test"]) -> TensorDictDataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        for name in ("train", "val", "test"):
            self.split(name)

    def _set_sizes(
        self, prefix: str, num_train: int, num_val: int, num_test: int, batch_size: int, seed: int
    ) -> None:
        """Check ``num_train``, ``num_val`` and ``batch_size`` are >= 1 (errors name ``prefix``)
        and store the split sizes, ``batch_size`` and ``seed`` (for modules that draw splits)."""
        for field, value in (
            ("num_train", num_train),
            ("num_val", num_val),
            ("batch_size", batch_size),
        ):
            if value < 1:
                raise ValueError(f"{prefix}: {field} must be >= 1, got {value}")
        self.num_train, self.num_val, self.num_test = int(num_train), int(num_val), int(num_test)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self._splits: dict[str, TensorDictDataset] = {}

    def _loader(self, name: Literal["train", "val", "test"], shuffle: bool) -> DataLoader:
        data = self.split(name)
        return DataLoader(
            data,
            batch_size=self.batch_size,
            sampler=epoch_shuffle(data, self.seed, self.trainer) if shuffle else None,
            drop_last=shuffle,
            collate_fn=collate_dict,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class GaussianMixtureDataModule(TensorSplitsDataModule):
    """Mixture ``sum_k w_k N(mu_k, s_k^2 I)`` with equal weights.

    Args:
        preset: ``diamond`` (2-D, 9 components, std 0.04), ``ring`` or ``random``.
        dim: data dimension (``diamond``: 2; default 2).
        num_components: number of components (``diamond``: 9; default 8).
        std: component standard deviation (``diamond``: 0.04; default 0.05).
        radius: ring radius, or the scale of ``random`` means.
        labels: also yield the component index as ``y`` (for class-conditional models).
        num_train, num_val, num_test: split sizes.
        batch_size: training and evaluation batch size.
        seed: seed of the means (``random``) and of every split.
    """

    def __init__(
        self,
        preset: Preset = "diamond",
        dim: int | None = None,
        num_components: int | None = None,
        std: float | None = None,
        radius: float = 1.0,
        labels: bool = False,
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 2048,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if preset == "diamond":
            for field, given, fixed in (("dim", dim, 2), ("num_components", num_components, 9)):
                if given is not None and given != fixed:
                    raise ValueError(
                        f"gmm: preset 'diamond' has {field}={fixed}, got {field}={given}; "
                        "use preset 'ring' or 'random' for other sizes"
                    )
            dim, num_components, std = 2, 9, 0.04 if std is None else std
        elif preset in ("ring", "random"):
            dim = 2 if dim is None else dim
            num_components = 8 if num_components is None else num_components
            std = 0.05 if std is None else std
            if preset == "ring" and dim < 2:
                raise ValueError(f"gmm: preset 'ring' needs dim >= 2, got dim={dim}")
        else:
            raise ValueError(f"gmm: preset must be 'diamond', 'ring' or 'random', got {preset!r}")
        if dim < 1 or num_components < 1:
            raise ValueError(
                f"gmm: need dim >= 1 and num_components >= 1, got {dim}, {num_components}"
            )
        if not std > 0 or not radius > 0:
            raise ValueError(f"gmm: std and radius must be > 0, got std={std}, radius={radius}")
        self._set_sizes("gmm", num_train, num_val, num_test, batch_size, seed)
        self.preset, self.dim, self.num_components = preset, int(dim), int(num_components)
        self.std, self.radius, self.labels = float(std), float(radius), bool(labels)
        self.data_shape = (self.dim,)
        self.num_classes = self.num_components if self.labels else None
        self.means = self._means()  # (K, d) float64
        self.weights = torch.full(
            (self.num_components,), 1.0 / self.num_components, dtype=torch.float64
        )

    def _means(self) -> Tensor:
        k, d = self.num_components, self.dim
        if self.preset == "diamond":
            return diamond_means()
        if self.preset == "ring":
            angle = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
            means = torch.zeros(k, d, dtype=torch.float64)
            means[:, 0], means[:, 1] = self.radius * angle.cos(), self.radius * angle.sin()
            return means
        g = self._generator("means")
        return self.radius * torch.randn(k, d, generator=g, dtype=torch.float64)

    def _generator(self, split: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + _SPLITS[split])

    # ------------------------------------------------------------------ exact law
    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` samples ``(n, dim)`` float64 and their component indices ``(n,)``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.std * noise, comp

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh draws from the law ``(n, dim)`` float32, independent of every split
        (default generator: seeded from ``seed``, so repeated calls agree)."""
        x, _ = self.draw(n, generator if generator is not None else self._generator("reference"))
        return x.float()

    def exact_distribution(self):
        """The law as :class:`diffkit.sdes.exact.GaussianMixture` (float64)."""
        from diffkit.sdes.exact import GaussianMixture

        variances = torch.full((self.num_components,), self.std**2, dtype=torch.float64)
        return GaussianMixture(self.weights, self.means, variances)

    # ------------------------------------------------------------------ splits
    def split(self, name: Literal["train", "val", "test"]) -> TensorDictDataset:
        """The dataset of one split (drawn once, float32)."""
        if name not in self._splits:
            n = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[name]
            x, comp = self.draw(n, self._generator(name))
            self._splits[name] = TensorDictDataset(x.float(), comp if self.labels else None)
        return self._splits[name]
