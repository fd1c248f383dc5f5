"""FID, KID on torchmetrics, injectable feature extractor [FID, 1706.08500; KID, 1801.01401].

* FID is the *squared* W2 between Gaussian fits of the feature distributions; diffkit computes it
  from torchmetrics' float64 sum states with the symmetric float64 square root of
  :mod:`diffkit.metrics.gaussian_w2`. It is biased upward at small n: ``n`` is always reported,
  and in-loop FID on a few thousand samples is not comparable to published (50k) numbers.
* KID is the unbiased polynomial-kernel MMD^2 ``k(x, y) = (x.y / d + 1)^3`` averaged over random
  subsets; diffkit draws the subsets from a seeded generator (torchmetrics uses the global RNG).

Images are ``(N, C, H, W)`` floats in ``data_range`` (diffkit's images live in ``[-1, 1]``); they
are mapped to ``[0, 1]`` before the extractor (see :mod:`diffkit.metrics.features`).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd
from torchmetrics.utilities import dim_zero_cat

from diffkit.metrics.base import SampleMetric
from diffkit.metrics.features import build_feature_extractor
from diffkit.metrics.gaussian_w2 import gaussian_w2_squared

__all__ = ["FID", "KID"]


def _to_unit(x: Tensor, data_range: tuple[float, float]) -> Tensor:
    lo, hi = data_range
    return ((x.float() - lo) / (hi - lo)).clamp(0.0, 1.0)


def _check_range(name: str, data_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in data_range)
    if not hi > lo:
        raise ValueError(f"{name}.data_range must be (low, high) with high > low, got {data_range}")
    return lo, hi


class FID(FrechetInceptionDistance, SampleMetric):
    """Frechet distance between feature Gaussians of generated and reference images.

    Args:
        feature: ``"inception"`` (standard weights; see :class:`InceptionFeatures` for offline
            use), ``"random"`` (seeded random conv net, CI only), a class path of an
            ``nn.Module`` mapping ``[0, 1]`` images to ``(N, D)``, or such a module.
        feature_args: init arguments of the named extractor.
        data_range: value range of the images given to :meth:`update`.
        reset_real_features: whether :meth:`reset` also clears the reference statistics.
    """

    name: ClassVar[str] = "fid"

    def __init__(
        self,
        feature: str | nn.Module = "inception",
        feature_args: dict[str, Any] | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        reset_real_features: bool = True,
    ) -> None:
        extractor = build_feature_extractor(feature, feature_args)
        super().__init__(feature=extractor, reset_real_features=reset_real_features, normalize=True)
        self.data_range = _check_range("FID", data_range)

    def update(self, generated: Tensor | None = None, reference: Tensor | None = None) -> None:
        """Add images ``(n, C, H, W)`` in ``data_range``: generated and/or reference."""
        if generated is None and reference is None:
            raise ValueError("FID.update needs generated and/or reference images")
        self._count(generated, reference)
        if generated is not None:
            FrechetInceptionDistance.update(self, _to_unit(generated, self.data_range), real=False)
        if reference is not None:
            FrechetInceptionDistance.update(self, _to_unit(reference, self.data_range), real=True)

    def reset(self) -> None:
        """Reset; the reference counts stay with the reference features they count."""
        kept = self.non_finite[2:].clone()
        super().reset()
        if not self.reset_real_features:
            self.non_finite[2:] = kept

    def compute(self) -> dict[str, Tensor]:
        """``{"value": FID, "n", "n_reference"}``."""
        self._raise_if_non_finite()
        n_gen, n_ref = self.fake_features_num_samples, self.real_features_num_samples
        if n_gen < 2 or n_ref < 2:
            raise ValueError(f"FID needs >= 2 images per side, got {int(n_gen)} and {int(n_ref)}")
        mean_g = self.fake_features_sum / n_gen
        mean_r = self.real_features_sum / n_ref
        cov_g = (self.fake_features_cov_sum - n_gen * torch.outer(mean_g, mean_g)) / (n_gen - 1)
        cov_r = (self.real_features_cov_sum - n_ref * torch.outer(mean_r, mean_r)) / (n_ref - 1)
        value = gaussian_w2_squared(mean_g, cov_g, mean_r, cov_r)
        return {"value": value, "n": n_gen.clone(), "n_reference": n_ref.clone()}


class KID(KernelInceptionDistance, SampleMetric):
    """Kernel inception distance: mean (``value``) and std (``std``) over random subsets.

    All features are kept (a ``cat`` state): memory grows with ``n``. When fewer than
    ``subset_size`` images exist on a side, the subsets use all of the smaller
    side and ``subset_size`` in the result reports the size used.

    Args:
        feature: as for :class:`FID`.
        feature_args: init arguments of the named extractor.
        subsets: number of random subsets.
        subset_size: images per subset.
        degree: polynomial degree (3).
        coef: kernel offset (1).
        data_range: value range of the images given to :meth:`update`.
        seed: seed of the subset draws.
    """

    name: ClassVar[str] = "kid"

    def __init__(
        self,
        feature: str | nn.Module = "inception",
        feature_args: dict[str, Any] | None = None,
        subsets: int = 100,
        subset_size: int = 1000,
        degree: int = 3,
        coef: float = 1.0,
        data_range: tuple[float, float] = (-1.0, 1.0),
        seed: int = 0,
    ) -> None:
        extractor = build_feature_extractor(feature, feature_args)
        with warnings.catch_warnings():  # "will save all extracted features": documented above
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            super().__init__(
                feature=extractor,
                subsets=subsets,
                subset_size=subset_size,
                degree=degree,
                coef=float(coef),
                normalize=True,
            )
        self.data_range = _check_range("KID", data_range)
        self.seed = int(seed)

    def update(self, generated: Tensor | None = None, reference: Tensor | None = None) -> None:
        """Add images ``(n, C, H, W)`` in ``data_range``: generated and/or reference."""
        if generated is None and reference is None:
            raise ValueError("KID.update needs generated and/or reference images")
        self._count(generated, reference)
        if generated is not None:
            KernelInceptionDistance.update(self, _to_unit(generated, self.data_range), real=False)
        if reference is not None:
            KernelInceptionDistance.update(self, _to_unit(reference, self.data_range), real=True)

    def compute(self) -> dict[str, Tensor]:
        """``{"value": mean KID, "std", "n", "n_reference", "subset_size"}``."""
        self._raise_if_non_finite()
        real = dim_zero_cat(self.real_features).to(torch.float64)
        fake = dim_zero_cat(self.fake_features).to(torch.float64)
        size = min(self.subset_size, real.shape[0], fake.shape[0])
        if size < 2:
            raise ValueError("KID needs >= 2 images per side")
        g = torch.Generator().manual_seed(self.seed)
        scores = []
        for _ in range(self.subsets):
            ir = torch.randperm(real.shape[0], generator=g)[:size].to(real.device)
            ifk = torch.randperm(fake.shape[0], generator=g)[:size].to(fake.device)
            scores.append(poly_mmd(real[ir], fake[ifk], self.degree, self.gamma, self.coef))
        s = torch.stack(scores)
        return {
            "value": s.mean(),
            "std": s.std(unbiased=False),
            "n": torch.tensor(fake.shape[0]),
            "n_reference": torch.tensor(real.shape[0]),
            "subset_size": torch.tensor(size),
        }
