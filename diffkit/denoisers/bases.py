"""One-dimensional function bases for the functional tensor train
(docs/background/denoisers.md#tensor-train).

Both bases evaluate ``m`` functions at every coordinate of ``x`` ``(B, d)`` and return
``(B, d, m)``; each coordinate ``i`` has its own interval ``[a_i, b_i]`` (``lower``/``upper``,
broadcast from scalars), mapped affinely onto the basis domain.

* :class:`LegendreBasis`: orthonormal Legendre polynomials on ``[-1, 1]``,
  ``phi^k = sqrt((2k + 1) / 2) P_k`` with Bonnet's recursion
  ``P_k = ((2k - 1) x P_{k-1} - (k - 1) P_{k-2}) / k`` (not BE24 eq. 14, which is the recursion
  for ``P_{k+1}`` with a shifted index). Inputs outside ``[a, b]`` are clamped.
* :class:`BSplineBasis`: B-splines of degree ``p`` on uniform knots [TTDE, 2108.00089]:
  ``h = (b - a) / (m - p)``, ``o_k = a - p h + k h`` for ``k = 0..m + p`` (``m + p + 1``
  knots, not BE24 eq. 17's floored step and ``m`` knots), by the Cox-de Boor recursion. The knots
  extend ``p`` intervals beyond each end, so ``B_0..B_{m-1}`` sum to one on ``[a, b]`` (the
  endpoint ``b`` included). Inputs outside ``[a, b]`` are clamped by default (``clamp=True``), a
  constant extension; with ``clamp=False`` the splines decay to zero on ``[a - p h, b + p h]``
  and vanish beyond (a denoiser then predicts 0 far out, which lets sampling trajectories that
  leave the domain escape: the bench of ``tools/bench_denoisers.py`` showed it).

Everything is computed in the input's dtype (float64 in the reference tests).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["BSplineBasis", "LegendreBasis"]


class _Basis1D(nn.Module):
    def __init__(self, size: int, lower: float, upper: float) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"basis size must be >= 1, got {size}")
        if not upper > lower:
            raise ValueError(f"basis domain needs upper > lower, got [{lower}, {upper}]")
        self.size, self.lower, self.upper = int(size), float(lower), float(upper)


class LegendreBasis(_Basis1D):
    """Orthonormal Legendre polynomials ``phi^0..phi^{m-1}`` of ``[lower, upper]`` -> ``[-1, 1]``.

    Args:
        size: number of functions ``m`` (degree ``m - 1``).
        lower: left end ``a`` of the input interval.
        upper: right end ``b``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, d)`` -> ``(B, d, m)``."""
        z = (2 * (x - self.lower) / (self.upper - self.lower) - 1).clamp(-1.0, 1.0)
        polys = [torch.ones_like(z)]
        if self.size > 1:
            polys.append(z)
        for k in range(2, self.size):
            polys.append(((2 * k - 1) * z * polys[-1] - (k - 1) * polys[-2]) / k)
        p = torch.stack(polys, dim=-1)
        norm = torch.tensor(
            [math.sqrt((2 * k + 1) / 2) for k in range(self.size)], dtype=x.dtype, device=x.device
        )
        return p * norm


class BSplineBasis(_Basis1D):
    """B-splines of degree ``degree`` on uniform knots covering ``[lower, upper]``.

    Args:
        size: number of functions ``m`` (``m > degree``).
        lower: left end ``a``.
        upper: right end ``b``.
        degree: polynomial degree ``p`` (2 in TTDE).
        clamp: clamp inputs to ``[lower, upper]`` (else the splines vanish outside).
    """

    def __init__(
        self, size: int, lower: float, upper: float, degree: int = 2, clamp: bool = True
    ) -> None:
        super().__init__(size, lower, upper)
        self.clamp = bool(clamp)
        if degree < 0 or size <= degree:
            raise ValueError(f"B-splines of degree {degree} need size > degree, got size {size}")
        self.degree = int(degree)
        self.step = (self.upper - self.lower) / (self.size - self.degree)

    def knots(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The ``m + p + 1`` knots ``o_k = a - p h + k h``."""
        k = torch.arange(self.size + self.degree + 1, dtype=dtype)
        return self.lower - self.degree * self.step + k * self.step

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``(B, d)`` -> ``(B, d, m)`` by Cox-de Boor on knots in units of ``h``."""
        p, m = self.degree, self.size
        if self.clamp:
            x = x.clamp(self.lower, self.upper)
        # knot coordinate: o_k corresponds to s = k
        s = ((x - self.lower) / self.step + p).unsqueeze(-1)
        k = torch.arange(m + p, dtype=x.dtype, device=x.device)
        # degree 0: indicator of [k, k + 1); b lies at s = m, inside the extended knots
        b = ((s >= k) & (s < k + 1)).to(x.dtype)
        for q in range(1, p + 1):
            kk = k[: m + p - q]
            left = (s - kk) / q * b[..., :-1]
            right = (kk + q + 1 - s) / q * b[..., 1:]
            b = left + right
        return b
