"""Vector datasets of scikit-learn's generators and bundled data (BE24's study): the 3-D swiss
roll and the 8 x 8 digits as 64-D vectors. (Moons, circles and the 2-D swiss roll are
:mod:`diffkit.data.toy2d`.)

* ``swiss_roll_3d``: ``(a cos a, h, a sin a) / 5`` with ``a = 1.5 pi (1 + 2 U)``,
  ``h ~ U[0, 21]`` centred (the law of ``sklearn.datasets.make_swiss_roll``, scaled so its
  coordinates lie roughly in ``[-3, 3]``), plus Gaussian ``noise`` before scaling. Splits are
  drawn once per seed; reference samples are fresh draws.
* ``digits64``: sklearn's bundled 1797 digits, pixels ``k in 0..16`` dequantised uniformly,
  ``(k + u) / 17``, and scaled to ``[-1, 1]``: ``x = 2 (k + u) / 17 - 1`` (a continuous density,
  so likelihoods are meaningful; ``dequantize=False`` uses ``2 k / 16 - 1``). A seeded
  permutation holds out ``num_test`` images (the reference samples) and ``num_val`` more.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from diffkit.data.tabular import ArraySplitsDataModule

__all__ = ["Digits64DataModule", "SwissRoll3DDataModule", "sample_swiss_roll_3d"]


def sample_swiss_roll_3d(n: int, noise: float, generator: torch.Generator) -> Tensor:
    """``n`` draws ``(n, 3)`` float64 of the scaled 3-D swiss roll."""
    g, f64 = generator, torch.float64
    a = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g, dtype=f64))
    h = 21.0 * torch.rand(n, generator=g, dtype=f64) - 10.5
    pts = torch.stack([a * a.cos(), h, a * a.sin()], dim=1)
    return (pts + noise * torch.randn(n, 3, generator=g, dtype=f64)) / 5.0


class SwissRoll3DDataModule(ArraySplitsDataModule):
    """The 3-D swiss roll; batches ``{"x": (B, 3) float32}``.

    Args:
        noise: Gaussian noise std before scaling (sklearn's ``noise``).
        num_train, num_val, num_test: split sizes.
        batch_size: training and evaluation batch size.
        seed: seed of the splits.
    """

    name = "swiss_roll_3d"

    def __init__(
        self,
        noise: float = 0.25,
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 2048,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, None, seed)
        self.save_hyperparameters()
        if noise < 0 or min(num_train, num_val, num_test) < 1:
            raise ValueError(
                f"swiss_roll_3d: need noise >= 0 and split sizes >= 1, got noise={noise}, "
                f"sizes {num_train}, {num_val}, {num_test}"
            )
        self.noise = float(noise)
        self.sizes = (int(num_train), int(num_val), int(num_test))
        self.data_shape = (3,)
        self.num_classes = None

    def load_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(  # type: ignore[return-value]
            sample_swiss_roll_3d(n, self.noise, torch.Generator().manual_seed(self.seed * 1000 + i))
            for i, n in enumerate(self.sizes)
        )

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh draws ``(n, 3)`` float32, independent of the splits."""
        g = generator if generator is not None else torch.Generator().manual_seed(self.seed + 99)
        return sample_swiss_roll_3d(n, self.noise, g).float()


class Digits64DataModule(ArraySplitsDataModule):
    """sklearn's 8 x 8 digits as 64-D vectors in ``[-1, 1]``; batches ``{"x": (B, 64)}``.

    Args:
        dequantize: add ``U[0, 1)`` to the pixel levels before scaling (see the module docstring).
        num_val: images held out for the validation loss.
        num_test: images held out as reference samples.
        batch_size: training and evaluation batch size.
        seed: seed of the permutation and of the dequantisation noise.
    """

    name = "digits64"

    def __init__(
        self,
        dequantize: bool = True,
        num_val: int = 100,
        num_test: int = 297,
        batch_size: int = 128,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, None, seed)
        self.save_hyperparameters()
        if num_val < 1 or num_test < 1 or num_val + num_test >= 1797:
            raise ValueError(
                f"digits64: need num_val, num_test >= 1 with num_val + num_test < 1797, got "
                f"{num_val}, {num_test}"
            )
        self.dequantize = bool(dequantize)
        self.num_val, self.num_test = int(num_val), int(num_test)
        self.data_shape = (64,)
        self.num_classes = None

    def load_splits(self) -> tuple[Tensor, Tensor, Tensor]:
        from sklearn.datasets import load_digits

        levels = torch.from_numpy(np.asarray(load_digits().data, dtype=np.float64))
        g = torch.Generator().manual_seed(self.seed * 1000 + 17)
        perm = torch.randperm(levels.shape[0], generator=g)
        if self.dequantize:
            x = 2.0 * (levels + torch.rand(levels.shape, generator=g, dtype=torch.float64)) / 17 - 1
        else:
            x = 2.0 * levels / 16.0 - 1.0
        x = x[perm]
        test, val = x[: self.num_test], x[self.num_test : self.num_test + self.num_val]
        return x[self.num_test + self.num_val :], val, test
