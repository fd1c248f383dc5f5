"""Exact 2-Wasserstein distance between Gaussians [Dowson & Landau 1982; Givens & Shortt 1984].

``W2^2(N(m1, C1), N(m2, C2)) = |m1 - m2|^2 + tr(C1 + C2 - 2 (C1^{1/2} C2 C1^{1/2})^{1/2})``
(docs/background/metrics.md#gaussian-w2). Computed in float64: ``C1^{1/2}`` by ``eigh``, then the
eigenvalues of the
symmetric matrix ``C1^{1/2} C2 C1^{1/2}`` with tiny negatives clipped to 0. FID is the *square* of
this distance between Gaussian fits of features (docs/background/metrics.md#fid).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor
from torchmetrics.utilities import dim_zero_cat

from diffkit.metrics.base import SampleMetric

__all__ = ["GaussianW2", "gaussian_w2", "gaussian_w2_squared", "mean_cov", "sqrtm_psd"]


def sqrtm_psd(c: Tensor) -> Tensor:
    """Symmetric square root of a positive semi-definite matrix ``(..., D, D)``, float64."""
    c = c.to(torch.float64)
    c = 0.5 * (c + c.mT)
    w, v = torch.linalg.eigh(c)
    return (v * w.clamp_min(0).sqrt().unsqueeze(-2)) @ v.mT


def gaussian_w2_squared(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """Squared W2 of ``N(mean1, cov1)`` and ``N(mean2, cov2)``; means ``(D,)``, covs ``(D, D)``."""
    mean1, mean2 = mean1.to(torch.float64), mean2.to(torch.float64)
    cov1, cov2 = cov1.to(torch.float64), cov2.to(torch.float64)
    if mean1.shape != mean2.shape or cov1.shape != cov2.shape or cov1.shape[-1] != mean1.shape[-1]:
        raise ValueError(
            "gaussian_w2: means must be (D,) and covariances (D, D) of the same D; got "
            f"{tuple(mean1.shape)}, {tuple(cov1.shape)}, {tuple(mean2.shape)}, {tuple(cov2.shape)}"
        )
    r1 = sqrtm_psd(cov1)
    middle = r1 @ cov2 @ r1
    eig = torch.linalg.eigvalsh(0.5 * (middle + middle.mT)).clamp_min(0)
    cross = eig.sqrt().sum(-1)
    tr = torch.diagonal(cov1, dim1=-2, dim2=-1).sum(-1) + torch.diagonal(
        cov2, dim1=-2, dim2=-1
    ).sum(-1)
    return ((mean1 - mean2).pow(2).sum(-1) + tr - 2.0 * cross).clamp_min(0)


def gaussian_w2(mean1: Tensor, cov1: Tensor, mean2: Tensor, cov2: Tensor) -> Tensor:
    """W2 (not squared) between two Gaussians, float64 scalar."""
    return gaussian_w2_squared(mean1, cov1, mean2, cov2).sqrt()


def mean_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean ``(D,)`` and unbiased covariance ``(D, D)`` of rows ``(n, D)``, float64."""
    x = x.to(torch.float64)
    mean = x.mean(0)
    xc = x - mean
    return mean, xc.T @ xc / (x.shape[0] - 1)


class GaussianW2(SampleMetric):
    """W2 between the Gaussian fit of the generated samples and a Gaussian target.

    The target is ``N(mean, cov)`` when given (a known law, e.g. Gaussian data pushed through an
    exact sampler), else the Gaussian fit of the reference samples. The value is W2, not squared.
    Only the sample mean and covariance enter, so this measures second-order agreement only.

    Args:
        mean: target mean ``(D,)`` (flattened data), or ``None`` to fit the reference samples.
        cov: target covariance ``(D, D)``; required with ``mean``.
    """

    name: ClassVar[str] = "gaussian_w2"

    def __init__(
        self, mean: list[float] | None = None, cov: list[list[float]] | None = None
    ) -> None:
        super().__init__()
        if (mean is None) != (cov is None):
            raise ValueError("GaussianW2: give both mean and cov for a known target, or neither")
        self.target: tuple[Tensor, Tensor] | None = None
        if mean is not None:
            self.set_target(torch.as_tensor(mean), torch.as_tensor(cov))
        self._add_sample_states()

    def set_target(self, mean: Tensor, cov: Tensor) -> None:
        """Compare with the known Gaussian ``N(mean, cov)`` (flattened ``(D,)`` and ``(D, D)``)."""
        mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.shape != (mean.numel(), mean.numel()):
            raise ValueError(
                f"GaussianW2.cov must be ({mean.numel()}, {mean.numel()}) to match mean, "
                f"got {tuple(cov.shape)}"
            )
        self.target = (mean, cov)

    def compute(self) -> dict[str, Tensor]:
        if self.target is None:
            return super().compute()
        self._raise_if_non_finite()
        gen = dim_zero_cat(self.generated) if len(self.generated) else None
        if gen is None or gen.shape[0] < 2:
            raise ValueError("GaussianW2 needs at least 2 generated samples")
        m, c = self.target
        if gen.shape[1] != m.numel():
            raise ValueError(
                f"GaussianW2: samples have {gen.shape[1]} dimensions, the target {m.numel()}"
            )
        mg, cg = mean_cov(gen)
        return {
            "value": gaussian_w2(mg, cg, m.to(gen.device), c.to(gen.device)),
            "n": torch.tensor(gen.shape[0]),
        }

    def _compute_pair(self, generated: Tensor, reference: Tensor) -> dict[str, Tensor]:
        mg, cg = mean_cov(generated)
        mr, cr = mean_cov(reference)
        return {"value": gaussian_w2(mg, cg, mr, cr)}
