"""A multivariate Gaussian ``N(mean, cov)`` as data (the first dataset of BE24's study).

Every split is drawn from the exact law with its own seeded generator (``x = mean + L z``,
``L`` the Cholesky factor of ``cov``). ``mean`` and ``cov`` are given in the config; the default
is a correlated 2-D Gaussian.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.data.gmm import TensorDictDataset, TensorSplitsDataModule

__all__ = ["GaussianDataModule"]

_SPLITS = {"train": 0, "val": 1, "test": 2, "reference": 3}


class GaussianDataModule(TensorSplitsDataModule):
    """Data ``N(mean, cov)``; batches ``{"x": (B, D) float32}``.

    Args:
        mean: the mean ``(D,)``.
        cov: the covariance ``(D, D)`` (symmetric positive definite); ``None``: the identity.
        num_train, num_val, num_test: split sizes.
        batch_size: training and evaluation batch size.
        seed: seed of every split.
    """

    def __init__(
        self,
        mean: list[float] = [0.5, -0.5],  # noqa: B006 (a config default, never mutated)
        cov: list[list[float]] | None = [[1.0, 0.8], [0.8, 1.0]],  # noqa: B006
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 2048,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        d = mu.numel()
        if d < 1:
            raise ValueError("gaussian: mean must have at least one entry")
        c = torch.eye(d, dtype=torch.float64) if cov is None else torch.as_tensor(cov).double()
        if c.shape != (d, d):
            raise ValueError(
                f"gaussian: cov must be {d} x {d} to match mean (length {d}), got {tuple(c.shape)}"
            )
        if not torch.allclose(c, c.T, atol=1e-12):
            raise ValueError("gaussian: cov must be symmetric")
        chol, info = torch.linalg.cholesky_ex(c)
        if int(info) != 0:
            raise ValueError("gaussian: cov must be positive definite (its Cholesky failed)")
        self._set_sizes("gaussian", num_train, num_val, num_test, batch_size, seed)
        self.mean, self.cov, self.chol = mu, c, chol
        self.data_shape = (d,)
        self.num_classes = None

    def _generator(self, split: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + 800 + _SPLITS[split])

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` draws ``(n, D)`` float64."""
        z = torch.randn(n, self.mean.numel(), generator=generator, dtype=torch.float64)
        return self.mean + z @ self.chol.T

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        g = generator if generator is not None else self._generator("reference")
        return self.draw(n, g).float()

    def exact_distribution(self):
        """The law as a one-component ``GaussianMixture`` when ``cov`` is diagonal, else None."""
        if not torch.equal(self.cov, torch.diag(torch.diagonal(self.cov))):
            return None
        from diffkit.sdes.exact import GaussianMixture

        return GaussianMixture(torch.ones(1), self.mean[None], torch.diagonal(self.cov)[None])

    def split(self, name: Literal["train", "val", "test"]) -> TensorDictDataset:
        if name not in self._splits:
            n = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[name]
            self._splits[name] = TensorDictDataset(self.draw(n, self._generator(name)).float())
        return self._splits[name]
