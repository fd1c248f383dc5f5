"""Classic 2-D toy distributions in closed form, seeded and vectorised.

Shapes (before ``noise``; every one is scaled so its coordinates lie roughly in ``[-3, 3]``):

- ``moons``: two interleaved half circles, ``(cos a, sin a)`` and ``(1 - cos a, 1/2 - sin a)``
  with ``a ~ U[0, pi]``, centred at ``(1/2, 1/4)`` and scaled by 2 (the law behind
  ``sklearn.datasets.make_moons``, with random instead of evenly spaced angles).
- ``circles``: two concentric circles of radii 2 and 1, equal weights (``make_circles``,
  ``factor=0.5``, scaled by 2).
- ``swiss_roll``: the 2-D swiss roll ``(a cos a, a sin a) / 5`` with ``a = 1.5 pi (1 + 2 U)``
  (the ``(x, z)`` projection of ``make_swiss_roll``).
- ``checkerboard``: uniform on the 8 dark squares of a 4 x 4 board covering ``[-2, 2]^2``.
- ``diamond``: CLD-SGM's 9-component Gaussian mixture [CLD, 2112.07068;
docs/background/sdes.md#exact-scores]; ``noise``
  is its component std (default 0.04) and :meth:`Toy2DDataModule.exact_distribution` gives it
  in closed form.

Additive Gaussian ``noise`` (std, in the unscaled coordinates) blurs the other shapes.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffkit.data.gmm import TensorDictDataset, TensorSplitsDataModule, diamond_means

__all__ = ["Toy2DDataModule", "sample_toy2d"]

Toy2D = Literal["moons", "circles", "swiss_roll", "checkerboard", "diamond"]
TOY2D_NAMES: tuple[str, ...] = ("moons", "circles", "swiss_roll", "checkerboard", "diamond")
DEFAULT_NOISE: dict[str, float] = {
    "moons": 0.05,
    "circles": 0.05,
    "swiss_roll": 0.25,
    "checkerboard": 0.0,
    "diamond": 0.04,
}
_SPLITS = {"train": 0, "val": 1, "test": 2, "reference": 3}


def sample_toy2d(name: str, n: int, noise: float, generator: torch.Generator) -> Tensor:
    """``n`` draws ``(n, 2)`` float64 of the toy ``name`` (see the module docstring)."""
    g, f64 = generator, torch.float64
    if name == "moons":
        a = math.pi * torch.rand(n, generator=g, dtype=f64)
        lower = torch.rand(n, generator=g, dtype=f64) < 0.5
        upper_pts = torch.stack([a.cos(), a.sin()], dim=1)
        lower_pts = torch.stack([1.0 - a.cos(), 0.5 - a.sin()], dim=1)
        pts = torch.where(lower[:, None], lower_pts, upper_pts)
        pts = pts + noise * torch.randn(n, 2, generator=g, dtype=f64)
        return 2.0 * (pts - torch.tensor([0.5, 0.25], dtype=f64))
    if name == "circles":
        a = 2 * math.pi * torch.rand(n, generator=g, dtype=f64)
        radius = torch.where(torch.rand(n, generator=g, dtype=f64) < 0.5, 1.0, 0.5)
        pts = radius[:, None] * torch.stack([a.cos(), a.sin()], dim=1)
        return 2.0 * (pts + noise * torch.randn(n, 2, generator=g, dtype=f64))
    if name == "swiss_roll":
        a = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g, dtype=f64))
        pts = torch.stack([a * a.cos(), a * a.sin()], dim=1)
        return (pts + noise * torch.randn(n, 2, generator=g, dtype=f64)) / 5.0
    if name == "checkerboard":
        # Dark squares: cells (i, j) of the 4 x 4 board with i + j even; pick one of 8 uniformly.
        cell = torch.randint(0, 8, (n,), generator=g)
        i = cell // 2
        j = 2 * (cell % 2) + (i % 2)
        corner = torch.stack([i, j], dim=1).to(f64) - 2.0
        pts = corner + torch.rand(n, 2, generator=g, dtype=f64)
        return pts + noise * torch.randn(n, 2, generator=g, dtype=f64)
    if name == "diamond":
        means = diamond_means()
        comp = torch.randint(0, means.shape[0], (n,), generator=g)
        return means[comp] + noise * torch.randn(n, 2, generator=g, dtype=f64)
    raise ValueError(f"toy2d: dataset must be one of {', '.join(TOY2D_NAMES)}; got {name!r}")


class Toy2DDataModule(TensorSplitsDataModule):
    """A 2-D toy distribution; batches ``{"x": (B, 2) float32}``.

    Args:
        dataset: ``moons``, ``circles``, ``swiss_roll``, ``checkerboard`` or ``diamond``.
        noise: additive noise std (``diamond``: component std); ``None`` = the dataset default
            (moons/circles 0.05, swiss_roll 0.25, checkerboard 0, diamond 0.04).
        num_train, num_val, num_test: split sizes (each drawn once from its own generator).
        batch_size: training and evaluation batch size.
        seed: seed of every split; reference samples are fresh draws independent of them.
    """

    def __init__(
        self,
        dataset: Toy2D = "moons",
        noise: float | None = None,
        num_train: int = 8192,
        num_val: int = 1024,
        num_test: int = 2048,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if dataset not in TOY2D_NAMES:
            raise ValueError(
                f"toy2d: dataset must be one of {', '.join(TOY2D_NAMES)}; got {dataset!r}"
            )
        noise = DEFAULT_NOISE[dataset] if noise is None else float(noise)
        if noise < 0 or (dataset == "diamond" and noise <= 0):
            raise ValueError(
                f"toy2d: noise must be >= 0 (> 0 for 'diamond', where it is the component std); "
                f"got {noise}"
            )
        self._set_sizes("toy2d", num_train, num_val, num_test, batch_size, seed)
        if num_test < 0:
            raise ValueError(f"toy2d: num_test must be >= 0, got {num_test}")
        self.dataset, self.noise = dataset, noise
        self.data_shape = (2,)
        self.num_classes = None

    def _generator(self, split: str) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1000 + 500 + _SPLITS[split])

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """``n`` fresh samples ``(n, 2)`` float64."""
        return sample_toy2d(self.dataset, n, self.noise, generator)

    def reference_samples(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` fresh draws ``(n, 2)`` float32, independent of every split."""
        g = generator if generator is not None else self._generator("reference")
        return self.draw(n, g).float()

    def exact_distribution(self):
        """The law in closed form for ``diamond`` (a ``GaussianMixture``); ``None`` otherwise."""
        if self.dataset != "diamond":
            return None
        from diffkit.sdes.exact import GaussianMixture

        means = diamond_means()
        k = means.shape[0]
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64)
        return GaussianMixture(weights, means, torch.full((k,), self.noise**2, dtype=torch.float64))

    def split(self, name: Literal["train", "val", "test"]) -> TensorDictDataset:
        """The dataset of one split (drawn once, float32)."""
        if name not in self._splits:
            n = {"train": self.num_train, "val": self.num_val, "test": self.num_test}[name]
            self._splits[name] = TensorDictDataset(self.draw(n, self._generator(name)).float())
        return self._splits[name]
