"""Datamodules over fixed arrays of vectors (tabular data): train / validation / test splits held
in memory, batches ``{"x": (B, D) float32}``.

Subclasses produce the three float64 splits once (:meth:`ArraySplitsDataModule.load_splits`);
``max_train`` keeps a seeded subset of the training rows (CPU studies). Reference samples for
metrics are rows of the test split (never seen in training), in a seeded order.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.data.gmm import TensorDictDataset, TensorSplitsDataModule

__all__ = ["ArraySplitsDataModule"]


class ArraySplitsDataModule(TensorSplitsDataModule):
    """Base class: ``load_splits() -> (train, val, test)`` float64 ``(N_i, D)`` tensors."""

    name: str = "tabular"

    def __init__(self, batch_size: int, max_train: int | None, seed: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        if max_train is not None and max_train < 1:
            raise ValueError(f"{self.name}: max_train must be >= 1 or null, got {max_train}")
        self.batch_size, self.max_train, self.seed = int(batch_size), max_train, int(seed)
        self._arrays: tuple[Tensor, Tensor, Tensor] | None = None
        self._splits: dict[str, TensorDictDataset] = {}

    def load_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def arrays(self) -> tuple[Tensor, Tensor, Tensor]:
        """The three splits (float64), ``max_train`` applied to the training rows."""
        if self._arrays is None:
            train, val, test = self.load_splits()
            if self.max_train is not None and train.shape[0] > self.max_train:
                g = torch.Generator().manual_seed(self.seed * 1000 + 7)
                keep = torch.randperm(train.shape[0], generator=g)[: self.max_train]
                train = train[keep.sort().values]
            self._arrays = (train, val, test)
        return self._arrays

    def split(self, name: Literal["train", "val", "test"]) -> TensorDictDataset:
        if name not in self._splits:
            train, val, test = self.arrays()
            x = {"train": train, "val": val, "test": test}[name]
            self._splits[name] = TensorDictDataset(x.float())
        return self._splits[name]

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` rows ``(n, D)`` float32 of the test split, in a seeded random order."""
        test = self.arrays()[2]
        if n > test.shape[0]:
            raise ValueError(
                f"{self.name}: {n} reference samples asked, the test split has {test.shape[0]}"
            )
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed + 3)
        return test[torch.randperm(test.shape[0], generator=g)[:n]].float()
