"""Square-root factors ``K_t K_t^T = Sigma_t`` that samplers define their eps against.

* ``kernel``: the SDE kernel's own ``scale`` (``sigma_t I`` for VP/VE/blur, the Cholesky factor
  ``L_t`` for CLD) -- the factor a network's eps is trained against.
* ``R``: gDDIM's factor solving ``dR/dt = F R + 1/2 G G^T R^{-T}``, ``R R^T = Sigma_t``
  [gDDIM, 2206.05564; thesis eq. 7.17]. For 1x1 blocks (scalar and per-frequency SDEs) it is
  ``Sigma_t^{1/2}``, because ``d Sigma^{1/2}/dt = F Sigma^{1/2} + g^2 / (2 Sigma^{1/2})``; for
  2x2 blocks (CLD) the SDE must provide it as ``kernel_factor_R(t)``.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp

__all__ = ["FactorKind", "has_factor", "noise_factor"]

FactorKind = Literal["kernel", "R"]


def has_factor(sde: LinearSDE, kind: FactorKind) -> bool:
    """Whether :func:`noise_factor` is defined for ``sde``."""
    return kind == "kernel" or sde.defines_kernel_factor_R()


def noise_factor(sde: LinearSDE, t: Tensor, kind: FactorKind) -> LinearOp:
    """The factor ``K_t`` (one row per time in ``t``), float64."""
    if kind == "kernel":
        return sde.kernel(t).scale
    if kind != "R":
        raise ValueError(f"factor must be 'kernel' or 'R', got {kind!r}")
    return sde.kernel_factor_R(t)
