"""Empirical optimal-transport distances between sample sets, through POT [Flamary+21].

* :class:`W2`: exact OT, ``W2 = sqrt(ot.emd2(a, b, ot.dist(x, y)))`` with uniform weights and a
  large ``numItermax`` (the default 1e5 stops early in high dimension and POT only warns;
  docs/background/metrics.md#empirical-ot). Beyond ``max_exact`` samples per side (cost ~n^3) it
  switches to the sliced
  W2 with a fixed seed, and reports ``sliced = 1``: sliced W2 is a lower bound of W2, not W2.
* :class:`Sinkhorn`: entropic OT [Cuturi13, 1306.0895].

Both are biased at finite n: two independent samples of the same law have W2 > 0 (noise floor
``~ n^{-1/d}`` in high dimension [FG15, 1312.2128]); compare against the data-vs-data floor at
the same ``n``.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor

from diffkit.metrics.base import SampleMetric

__all__ = ["W2", "Sinkhorn"]


def _uniform(n: int, like: Tensor) -> Tensor:
    return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)


class W2(SampleMetric):
    """Empirical 2-Wasserstein distance (not squared) between generated and reference samples.

    Args:
        max_exact: largest number of samples per side solved exactly; above it the sliced W2
            ``SW_2`` over ``n_projections`` random directions is reported instead.
        num_iter_max: POT's ``numItermax`` for the network simplex (>= 1e6 recommended).
        n_projections: directions of the sliced fallback.
        seed: seed of the sliced fallback's directions.
    """

    name: ClassVar[str] = "w2"

    def __init__(
        self,
        max_exact: int = 5000,
        num_iter_max: int = 2_000_000,
        n_projections: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_iter_max < 1:
            raise ValueError(f"W2.num_iter_max must be positive, got {num_iter_max}")
        self.max_exact, self.num_iter_max = int(max_exact), int(num_iter_max)
        self.n_projections, self.seed = int(n_projections), int(seed)
        self._add_sample_states()

    def _compute_pair(self, generated: Tensor, reference: Tensor) -> dict[str, Tensor]:
        import ot  # POT is imported on use: it costs 0.2-0.4 s at CLI start

        n, m = generated.shape[0], reference.shape[0]
        a, b = _uniform(n, generated), _uniform(m, reference)
        if max(n, m) <= self.max_exact:
            cost = ot.dist(generated, reference)
            w2sq = ot.emd2(a, b, cost, numItermax=self.num_iter_max)
            return {"value": torch.as_tensor(w2sq).clamp_min(0).sqrt(), "sliced": torch.tensor(0)}
        sw = ot.sliced_wasserstein_distance(
            generated, reference, a, b, n_projections=self.n_projections, p=2, seed=self.seed
        )
        return {"value": torch.as_tensor(sw), "sliced": torch.tensor(1)}


class Sinkhorn(SampleMetric):
    """Entropic OT between generated and reference samples (squared-Euclidean cost).

    Both sample sets are divided by ``sqrt(s)``, ``s`` the largest entry of the cross cost
    matrix, so that ``reg`` is relative to the cost scale (cost max = 1); the result is
    multiplied back by ``s``. The value is in *squared-distance* units (compare with ``w2**2``).

    * ``kind="cost"``: ``ot.sinkhorn2``, the transport cost ``<P_reg, M>`` of the entropic plan
      **without** the entropy term; biased upward relative to the exact OT cost ``W2^2``.
    * ``kind="divergence"``: the debiased Sinkhorn divergence
      ``OT(a, b) - OT(a, a)/2 - OT(b, b)/2`` [Genevay+18, 1706.00292; Feydy+19, 1810.08278] via
      ``ot.bregman.empirical_sinkhorn_divergence``; POT builds it from the same plan costs
      (no entropy term), so it vanishes for identical sets and is ~0 for equal laws.

    Args:
        reg: entropic regularisation relative to the cost scale.
        kind: ``cost`` or ``divergence`` (see above).
        method: POT solver; ``auto`` uses the log-domain ``sinkhorn_log`` when ``reg < 1e-2``
            (the plain scaling iterations underflow there), else ``sinkhorn``.
        num_iter_max: Sinkhorn iterations.
        stop_threshold: POT's ``stopThr``.
    """

    name: ClassVar[str] = "sinkhorn"

    def __init__(
        self,
        reg: float = 0.05,
        kind: Literal["cost", "divergence"] = "cost",
        method: Literal["auto", "sinkhorn", "sinkhorn_log"] = "auto",
        num_iter_max: int = 10_000,
        stop_threshold: float = 1e-9,
    ) -> None:
        super().__init__()
        if not reg > 0:
            raise ValueError(f"Sinkhorn.reg must be > 0 (relative to the cost scale), got {reg}")
        if kind not in ("cost", "divergence"):
            raise ValueError(f"Sinkhorn.kind must be 'cost' or 'divergence', got {kind!r}")
        if method not in ("auto", "sinkhorn", "sinkhorn_log"):
            raise ValueError(
                f"Sinkhorn.method must be 'auto', 'sinkhorn' or 'sinkhorn_log', got {method!r}"
            )
        self.reg, self.kind, self.method = float(reg), kind, method
        self.num_iter_max, self.stop_threshold = int(num_iter_max), float(stop_threshold)
        self._add_sample_states()

    @property
    def solver(self) -> str:
        """The POT method actually used."""
        if self.method != "auto":
            return self.method
        return "sinkhorn_log" if self.reg < 1e-2 else "sinkhorn"

    def _compute_pair(self, generated: Tensor, reference: Tensor) -> dict[str, Tensor]:
        import ot  # POT is imported on use: it costs 0.2-0.4 s at CLI start

        scale = ot.dist(generated, reference).max().clamp_min(1e-300)
        x, y = generated / scale.sqrt(), reference / scale.sqrt()
        a, b = _uniform(x.shape[0], x), _uniform(y.shape[0], y)
        if self.kind == "cost":
            val = ot.sinkhorn2(
                a,
                b,
                ot.dist(x, y),
                self.reg,
                method=self.solver,
                numItermax=self.num_iter_max,
                stopThr=self.stop_threshold,
            )
        else:
            val = ot.bregman.empirical_sinkhorn_divergence(
                x,
                y,
                self.reg,
                a,
                b,
                numIterMax=self.num_iter_max,
                stopThr=self.stop_threshold,
                method=self.solver,
            )
        return {"value": torch.as_tensor(val).reshape(()) * scale}
