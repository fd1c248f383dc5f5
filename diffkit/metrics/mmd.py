"""Maximum mean discrepancy with an RBF kernel, unbiased estimator [Gretton+12, 0805.2368].

``MMD^2_u = 1/(n(n-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
- 2/(nm) sum_{i,j} k(x_i, y_j)`` with ``k(x, y) = exp(-|x - y|^2 / (2 h^2))``. The unbiased
estimate can be slightly negative when the laws agree. Memory is ``O((n + m)^2)``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from diffkit.metrics.base import SampleMetric

__all__ = ["MMD", "median_bandwidth", "mmd2_unbiased", "rbf_kernel"]


def rbf_kernel(x: Tensor, y: Tensor, bandwidth: float | Tensor) -> Tensor:
    """``exp(-|x_i - y_j|^2 / (2 h^2))``, ``(n, m)``."""
    d2 = torch.cdist(x, y).pow(2)
    return torch.exp(-d2 / (2.0 * bandwidth**2))


def median_bandwidth(x: Tensor, y: Tensor, *, max_points: int = 2000) -> Tensor:
    """Median heuristic: ``h`` = median pairwise distance over the pooled samples.

    Uses the first ``max_points`` pooled rows (deterministic) to bound the cost.
    """
    z = torch.cat([x, y])[:max_points]
    d = torch.pdist(z)
    return d.median().clamp_min(1e-12)


def mmd2_unbiased(x: Tensor, y: Tensor, bandwidth: float | Tensor) -> Tensor:
    """Unbiased ``MMD^2`` between rows ``x (n, D)`` and ``y (m, D)``, RBF kernel."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = (
        rbf_kernel(x, x, bandwidth),
        rbf_kernel(y, y, bandwidth),
        rbf_kernel(x, y, bandwidth),
    )
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * kxy.mean()


class MMD(SampleMetric):
    """Unbiased squared MMD (RBF kernel) between generated and reference samples.

    Args:
        bandwidth: kernel width ``h`` in data units; ``None`` uses the median heuristic (median
            pairwise distance of the pooled samples, first 2000 rows), reported as ``bandwidth``.
    """

    name: ClassVar[str] = "mmd"

    def __init__(self, bandwidth: float | None = None) -> None:
        super().__init__()
        if bandwidth is not None and not bandwidth > 0:
            raise ValueError(
                f"MMD.bandwidth must be > 0 or None (median heuristic), got {bandwidth}"
            )
        self.bandwidth = bandwidth
        self._add_sample_states()

    def _compute_pair(self, generated: Tensor, reference: Tensor) -> dict[str, Tensor]:
        h = (
            median_bandwidth(generated, reference)
            if self.bandwidth is None
            else torch.tensor(float(self.bandwidth), dtype=torch.float64)
        )
        return {"value": mmd2_unbiased(generated, reference, h), "bandwidth": torch.as_tensor(h)}
