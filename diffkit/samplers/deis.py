"""DEIS: exponential integrator with a polynomial extrapolation of eps [DEIS, 2204.13902].

Order convention: ``order`` is the polynomial degree ``r``; each step uses ``r + 1`` eps values
(the current one and ``r`` earlier ones), like the DEIS paper's tAB-r / rhoAB-r and the
reference code's ``ab_order``. ``order = 0`` is DDIM (for factor ``R``, and for every SDE whose
kernel factor is ``sigma_t``). diffusers' ``solver_order`` counts values (``= order + 1``).
The first ``r`` steps use the lower orders available, at no extra NFE
(docs/background/samplers.md#deis).

Coefficients (:func:`~diffkit.samplers.exponential.exponential_coefficients`) are computed once
per (SDE, grid) in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.samplers.base import (
    CountingModel,
    Sampler,
    SamplerPlan,
    require_full_score,
)
from diffkit.samplers.exponential import Variant, exponential_coefficients
from diffkit.samplers.factors import FactorKind, has_factor, noise_factor
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["DEIS", "factor_rows", "run_multistep"]


def factor_rows(plan: SamplerPlan) -> list[LinearOp] | None:
    """The plan's per-step eps factors ``K`` as single-row operators, or ``None`` (kernel scale)."""
    k = plan.coefs.get("K")
    return None if k is None else [k[i] for i in range(k.n)]


def run_multistep(
    model: CountingModel,
    u: Tensor,
    plan: SamplerPlan,
    *,
    name: str,
    on_step: Callable[[int, Tensor], None],
) -> Tensor:
    """The multistep loop ``u_s = A u_t + sum_j C_j eps_{i-j}`` shared by DEIS and gDDIM.

    eps is formed against the kernel's scale, or against the plan's factor table ``K`` (one row
    per grid time) as ``-K^T score`` when the plan has one (see :func:`factor_rows`).
    """
    factor_ops = factor_rows(plan)
    c = plan.coefs
    A = c["A"].steps(u)
    C = [op.steps(u) for op in c["C"]]
    hist: list[Tensor] = []
    for i, q in enumerate(c["q"]):
        pred = model.at(u, i)
        require_full_score(pred, name)
        eps = pred.eps() if factor_ops is None else pred.eps(factor_ops[i])
        hist.insert(0, eps.to(u.dtype))
        del hist[len(C) :]
        out = A[i](u)
        for j in range(q + 1):
            out = C[j][i].add(out, hist[j])
        u = out
        on_step(i, u)
    return u


class DEIS(Sampler):
    """Multistep DEIS (tAB or rhoAB) of polynomial degree ``order``; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        order: polynomial degree r in 0..3 (r + 1 eps values; 0 = DDIM).
        variant: ``tab`` (Lagrange in t), ``rhoab`` (in rho = noise level) or ``logrho`` (in
            log rho = -lambda: lambda-domain DEIS, diffusers' ``DEISMultistepScheduler``).
        factor: eps convention, ``kernel`` (the kernel's scale, what networks are trained
            against; Cholesky for CLD) or ``R`` (gDDIM's factor).
        quadrature_nodes: Gauss-Legendre nodes per step for the coefficients.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    def __init__(
        self,
        steps: int = 20,
        grid: GridKind = "quadratic",
        t_min: float | None = None,
        t_max: float | None = None,
        order: int = 2,
        variant: Variant = "tab",
        factor: FactorKind = "kernel",
        quadrature_nodes: int = 48,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if order not in (0, 1, 2, 3):
            raise ValueError(f"DEIS.order must be 0, 1, 2 or 3 (polynomial degree), got {order}")
        if variant not in ("tab", "rhoab", "logrho"):
            raise ValueError(f"DEIS.variant must be 'tab', 'rhoab' or 'logrho', got {variant!r}")
        if factor not in ("kernel", "R"):
            raise ValueError(f"DEIS.factor must be 'kernel' or 'R', got {factor!r}")
        if quadrature_nodes < 2:
            raise ValueError(f"DEIS.quadrature_nodes must be >= 2, got {quadrature_nodes}")
        self.order, self.variant, self.factor = int(order), variant, factor
        self.quadrature_nodes = int(quadrature_nodes)

    def check_sde(self, sde: LinearSDE) -> None:
        if not has_factor(sde, self.factor):
            noise_factor(sde, torch.ones(1, dtype=torch.float64), self.factor)  # raises

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        coefs = exponential_coefficients(
            sde,
            times,
            self.order,
            variant=self.variant,
            factor=self.factor,
            nodes=self.quadrature_nodes,
        )
        if self.factor == "R" and sde.block == 2:
            coefs["K"] = noise_factor(sde, times[:-1], "R")
        return coefs

    def run(
        self,
        model: CountingModel,
        sde: LinearSDE,
        u: Tensor,
        plan: SamplerPlan,
        *,
        generator: torch.Generator | None,
        on_step: Callable[[int, Tensor], None],
    ) -> Tensor:
        return run_multistep(model, u, plan, name="deis", on_step=on_step)
