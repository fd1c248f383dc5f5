"""Structured linear operators on diffusion states.

Every operator a linear SDE needs (drift F, diffusion G, transition Psi, covariance Sigma and
its square roots) is block-diagonal in one fixed orthonormal basis:

* scalar SDEs (VP, VE): ``k = 1``, no mode axes, identity basis;
* blurring: ``k = 1``, one coefficient per DCT frequency ``(H, W)``, DCT basis;
* CLD: ``k = 2`` blocks acting on the (position, velocity) pair axis, identity basis.

One class, :class:`LinearOp`, covers all of them: its coefficient tensor has shape
``(N, *M, k, k)``, where ``N`` is 1, the batch size, or the length of a time grid, and the
mode shape ``M`` is right-aligned against the data shape ``S``. A state ``u`` has shape
``(B, *S)`` for ``k = 1`` and ``(B, 2, *S)`` for ``k = 2``. Because algebra (``@``, ``+``,
``inv``, ``cholesky``, ``.T``) acts on the trailing ``k x k`` blocks, samplers and losses are
written once for every SDE, and no dense ``D x D`` matrix is ever formed.

Coefficients are computed in float64 and cast to the state's dtype only in :meth:`LinearOp.apply`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = ["Basis", "DCTBasis", "LinearOp", "StepOp"]


class Basis:
    """An orthonormal change of basis acting on the trailing two (spatial) axes of a state."""

    def forward(self, u: Tensor) -> Tensor:  # pixels -> modes
        raise NotImplementedError

    def inverse(self, u: Tensor) -> Tensor:  # modes -> pixels
        raise NotImplementedError


def dct_matrix(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal DCT-II matrix ``C`` of size ``(n, n)``: ``X = C x`` (rows are frequencies)."""
    k = torch.arange(n, dtype=dtype)[:, None]
    m = torch.arange(n, dtype=dtype)[None, :]
    c = torch.cos(math.pi * k * (2 * m + 1) / (2 * n)) * math.sqrt(2.0 / n)
    c[0] = c[0] / math.sqrt(2.0)
    return c


class DCTBasis(Basis):
    """Orthonormal 2-D DCT-II per channel on ``(..., H, W)`` [BDM, 2209.05557].

    Implemented as two small matrix products (exact, and fast for the image sizes diffusion
    models use on the CPU). Matrices are built in float64 and cached per (device, dtype).
    """

    def __init__(self, height: int, width: int) -> None:
        if height < 1 or width < 1:
            raise ValueError(f"DCTBasis: image size must be positive, got {height}x{width}")
        self.height, self.width = int(height), int(width)
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _mats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = (
                dct_matrix(self.height).to(like.device, like.dtype),
                dct_matrix(self.width).to(like.device, like.dtype),
            )
        return self._cache[key]

    def _check(self, u: Tensor) -> None:
        if tuple(u.shape[-2:]) != (self.height, self.width):
            raise ValueError(
                f"DCT basis of size {self.height}x{self.width} cannot act on a state of shape "
                f"{tuple(u.shape)}: set the blur SDE's image_size to the data's (H, W)"
            )

    def forward(self, u: Tensor) -> Tensor:
        self._check(u)
        ch, cw = self._mats(u)
        return ch @ u @ cw.T

    def inverse(self, u: Tensor) -> Tensor:
        self._check(u)
        ch, cw = self._mats(u)
        return ch.T @ u @ cw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DCTBasis) and (self.height, self.width) == (
            other.height,
            other.width,
        )

    def __hash__(self) -> int:
        return hash(("dct", self.height, self.width))

    def __getstate__(self) -> dict:
        return {"height": self.height, "width": self.width, "_cache": {}}

    def __repr__(self) -> str:
        return f"DCTBasis({self.height}, {self.width})"


def _same_basis(a: LinearOp, b: LinearOp) -> Basis | None:
    """The basis of a combination of ``a`` and ``b``. An identity-basis operator without mode
    axes (a scalar or a pure 2x2 block) commutes with any basis change; one with mode axes
    (pixel-wise coefficients) does not, and cannot be combined with a DCT-domain operator."""
    if a.basis is None and (b.basis is None or not a.mode_shape):
        return b.basis
    if b.basis is None and not b.mode_shape:
        return a.basis
    if a.basis == b.basis:
        return a.basis
    raise ValueError(f"cannot combine operators in different bases: {a.basis!r} and {b.basis!r}")


@dataclass(frozen=True, eq=False)
class LinearOp:
    """A linear operator, block-diagonal with ``k x k`` blocks in ``basis``.

    Attributes:
        coef: ``(N, *M, k, k)``. ``N`` broadcasts against the batch; ``M`` (possibly empty) is
            right-aligned against the data shape ``S``; ``k`` is 1 or 2.
        basis: ``None`` for the identity basis, else e.g. a :class:`DCTBasis`.
    """

    coef: Tensor
    basis: Basis | None = None

    def __post_init__(self) -> None:
        if self.coef.dim() < 3 or self.coef.shape[-1] != self.coef.shape[-2]:
            raise ValueError(f"LinearOp.coef must be (N, *M, k, k), got {tuple(self.coef.shape)}")
        if self.coef.shape[-1] not in (1, 2):
            raise ValueError(f"LinearOp blocks must be 1x1 or 2x2, got k={self.coef.shape[-1]}")

    # ----------------------------------------------------------------- constructors
    @staticmethod
    def scalar(c: Tensor | float, *, basis: Basis | None = None, k: int = 1) -> LinearOp:
        """``c * I``; ``c`` is a number or ``(N,)``."""
        c = torch.as_tensor(c, dtype=torch.float64).reshape(-1, 1, 1)
        if k == 1:
            return LinearOp(c, basis)
        return LinearOp(c * torch.eye(k, dtype=c.dtype, device=c.device), basis)

    @staticmethod
    def diagonal(c: Tensor, *, basis: Basis | None = None) -> LinearOp:
        """Per-mode scalars: ``c`` is ``(N, *M)`` (``k = 1``)."""
        return LinearOp(c[..., None, None], basis)

    @staticmethod
    def block(c: Tensor, *, basis: Basis | None = None) -> LinearOp:
        """2x2 blocks: ``c`` is ``(N, *M, 2, 2)``."""
        return LinearOp(c, basis)

    # ----------------------------------------------------------------- properties
    @property
    def k(self) -> int:
        return self.coef.shape[-1]

    @property
    def n(self) -> int:
        return self.coef.shape[0]

    @property
    def mode_shape(self) -> tuple[int, ...]:
        return tuple(self.coef.shape[1:-2])

    @property
    def T(self) -> LinearOp:
        """Transpose (the basis is orthonormal, so only the blocks transpose)."""
        return LinearOp(self.coef.mT, self.basis)

    def __getitem__(self, idx: int | slice | Tensor) -> LinearOp:
        """Select along the leading axis; an integer keeps it as size 1."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1 if idx != -1 else None)
        return LinearOp(self.coef[idx], self.basis)

    # ----------------------------------------------------------------- algebra
    def _blocks(self, k: int) -> Tensor:
        if self.k == k:
            return self.coef
        if self.k == 1:
            return self.coef * torch.eye(k, dtype=self.coef.dtype, device=self.coef.device)
        raise ValueError(f"cannot combine a {self.k}x{self.k}-block operator with k={k}")

    def _binary(self, other: LinearOp) -> tuple[Tensor, Tensor, Basis | None]:
        basis = _same_basis(self, other)
        k = max(self.k, other.k)
        a, b = self._blocks(k), other._blocks(k)
        dtype = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(dtype), b.to(dtype)
        # Right-align mode shapes: (N, *M, k, k) vs (N', *M', k, k).
        da, db = a.dim(), b.dim()
        if da < db:
            a = a.reshape(a.shape[:1] + (1,) * (db - da) + a.shape[1:])
        elif db < da:
            b = b.reshape(b.shape[:1] + (1,) * (da - db) + b.shape[1:])
        return a, b, basis

    def __matmul__(self, other: LinearOp) -> LinearOp:
        a, b, basis = self._binary(other)
        return LinearOp(a @ b, basis)

    def __add__(self, other: LinearOp) -> LinearOp:
        a, b, basis = self._binary(other)
        return LinearOp(a + b, basis)

    def __sub__(self, other: LinearOp) -> LinearOp:
        a, b, basis = self._binary(other)
        return LinearOp(a - b, basis)

    def __neg__(self) -> LinearOp:
        return LinearOp(-self.coef, self.basis)

    def __mul__(self, c: Tensor | float) -> LinearOp:
        """Multiply by a number or by per-row scalars ``(N,)``."""
        if isinstance(c, Tensor) and c.dim() == 1:
            c = c.reshape(-1, *([1] * (self.coef.dim() - 1)))
        return LinearOp(self.coef * c, self.basis)

    __rmul__ = __mul__

    def inv(self) -> LinearOp:
        if self.k == 1:
            return LinearOp(1.0 / self.coef, self.basis)
        c = self.coef
        a, b, cc, d = c[..., 0, 0], c[..., 0, 1], c[..., 1, 0], c[..., 1, 1]
        det = a * d - b * cc
        out = torch.stack([torch.stack([d, -b], -1), torch.stack([-cc, a], -1)], -2)
        return LinearOp(out / det[..., None, None], self.basis)

    def cholesky(self) -> LinearOp:
        """Lower Cholesky factor of a symmetric positive-definite operator."""
        if self.k == 1:
            return LinearOp(self.coef.sqrt(), self.basis)
        c = self.coef
        lxx = c[..., 0, 0].sqrt()
        lvx = c[..., 1, 0] / lxx
        lvv = (c[..., 1, 1] - lvx**2).sqrt()
        zero = torch.zeros_like(lxx)
        out = torch.stack([torch.stack([lxx, zero], -1), torch.stack([lvx, lvv], -1)], -2)
        return LinearOp(out, self.basis)

    def det(self) -> Tensor:
        """Determinant of each block, ``(N, *M)``."""
        if self.k == 1:
            return self.coef[..., 0, 0]
        c = self.coef
        return c[..., 0, 0] * c[..., 1, 1] - c[..., 0, 1] * c[..., 1, 0]

    def logdet(self, data_shape: tuple[int, ...]) -> Tensor:
        """``log|det|`` of the full operator on states with data shape ``S``, ``(N,)``."""
        logd = self.det().abs().log()
        mode = self.mode_shape
        total = math.prod(data_shape)
        per_block = logd.reshape(logd.shape[0], -1).sum(-1)
        return per_block * (total // max(math.prod(mode), 1))

    def to(self, *args, **kwargs) -> LinearOp:
        return LinearOp(self.coef.to(*args, **kwargs), self.basis)

    # ----------------------------------------------------------------- application
    def _aligned(self, data_dims: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        c = self.coef.to(device=device, dtype=dtype)
        pad = data_dims - (c.dim() - 3)
        if pad < 0:
            raise ValueError(
                f"operator with mode shape {self.mode_shape} cannot act on data with "
                f"{data_dims} axes"
            )
        return c.reshape(c.shape[:1] + (1,) * pad + c.shape[1:])

    def apply(self, u: Tensor) -> Tensor:
        """Apply to a state ``u``: ``(B, *S)`` for ``k = 1``, ``(B, 2, *S)`` for ``k = 2``."""
        if self.basis is not None:
            u = self.basis.forward(u)
        if self.k == 1:
            c = self._aligned(u.dim() - 1, u.dtype, u.device)[..., 0, 0]
            out = c * u
        else:
            if u.dim() < 2 or u.shape[1] != 2:
                raise ValueError(f"a 2x2-block operator acts on (B, 2, *S), got {tuple(u.shape)}")
            c = self._aligned(u.dim() - 2, u.dtype, u.device)
            x, v = u[:, 0], u[:, 1]
            out = torch.stack(
                [c[..., 0, 0] * x + c[..., 0, 1] * v, c[..., 1, 0] * x + c[..., 1, 1] * v], 1
            )
        if self.basis is not None:
            out = self.basis.inverse(out)
        return out

    __call__ = apply

    def solve(self, u: Tensor) -> Tensor:
        """``op^{-1} u``."""
        return self.inv().apply(u)

    def dense(self, data_shape: tuple[int, ...]) -> Tensor:
        """The dense matrix ``(N, D_state, D_state)``; for tests on tiny shapes only."""
        k = self.k
        state = data_shape if k == 1 else (2, *data_shape)
        d = math.prod(state)
        eye = torch.eye(d, dtype=self.coef.dtype, device=self.coef.device).reshape(d, *state)
        cols = [LinearOp(self.coef[i : i + 1], self.basis).apply(eye) for i in range(self.n)]
        return torch.stack([c.reshape(d, d).T for c in cols])

    @cached_property
    def is_scalar(self) -> bool:
        return self.k == 1 and not self.mode_shape

    def steps(self, like: Tensor) -> list[StepOp]:
        """The rows of an operator table ``(N, ...)`` as :class:`StepOp` for a sampling loop
        over ``like``-shaped states (the per-step fast path: plain floats for scalar operators,
        else single-row operators cast once to ``like``'s dtype and device)."""
        if self.is_scalar:
            return [StepOp(None, c) for c in self.coef[:, 0, 0].tolist()]
        c = self.coef.to(device=like.device, dtype=like.dtype)
        return [StepOp(LinearOp(c[i : i + 1], self.basis)) for i in range(self.n)]


class StepOp:
    """One step's operator in a sampling loop: ``op(x)`` is ``op x`` and ``op.add(acc, x)`` is
    ``acc + op x``. A scalar operator (VP, VE) holds a Python float, so each is one fused tensor
    operation; others hold a single-row :class:`LinearOp` in the state's dtype."""

    __slots__ = ("op", "scale")

    def __init__(self, op: LinearOp | None, scale: float = 1.0) -> None:
        self.op, self.scale = op, scale

    def __call__(self, x: Tensor) -> Tensor:
        return x * self.scale if self.op is None else self.op.apply(x)

    def add(self, acc: Tensor, x: Tensor) -> Tensor:
        return acc.add(x, alpha=self.scale) if self.op is None else acc + self.op.apply(x)
