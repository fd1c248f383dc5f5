"""DPM-Solver++ multistep (data prediction), and its SDE variant [DPM-Solver, 2206.00927;
DPM-Solver++, 2211.01095 Alg. 2].

On the step ``t_i -> t_{i+1}`` with ``h = lambda_{i+1} - lambda_i``, ratios ``r0 = h_{i-1} / h``,
``r1 = h_{i-2} / h`` and data predictions ``D_i, D_{i-1}, D_{i-2}`` (:mod:`.log_snr` has
``Psihat`` and the moments ``M_k``; on VP ``M_k = alpha_s q_k(h)``)::

    order 1:          u' = Psihat u + M_0 D_i                                    (= DDIM)
    order 2 midpoint: u' = Psihat u + M_0 (D_i + (D_i - D_{i-1}) / (2 r0))
    order 2 heun:     u' = Psihat u + M_0 D_i + M_1 (D_i - D_{i-1}) / r0
    order 3:          u' = Psihat u + M_0 D_i + M_1 d1 + c M_2 d2,
        d1_0 = (D_i - D_{i-1}) / r0,  d1_1 = (D_{i-1} - D_{i-2}) / r1,
        d1 = d1_0 + r0 / (r0 + r1) (d1_0 - d1_1),  d2 = (d1_0 - d1_1) / (r0 + r1).

``d1 ~ h D'`` and ``d2 ~ h^2 D'' / 2``, so the Taylor expansion of ``D`` in ``lambda`` needs
``c = 1`` (``solver_type='heun'``, which also uses the exact moment ``M_1`` at order 2). The
published 3M update (DPM-Solver's code, diffusers, k-diffusion) has ``c = 1/2``
(``solver_type='midpoint'``, equal to diffusers' 3M): its local error is then ``O(h^3)`` and it
converges at order 2, not 3 (measured in ``tests/samplers/test_orders.py``).

The first steps use the orders available; ``lower_order_final`` (diffusers' rule) lowers the
last two steps to orders 1 and 2 when ``steps < 15``, and a last step to zero noise is always
first order. ``algorithm='sde-dpmsolver++'`` is the reverse-SDE variant (SDE-DPM-Solver++, with
``2h`` in the moments and fresh noise each step); ``algorithm='dpmsolver'`` interpolates eps
instead of ``D`` (DPM-Solver's noise prediction, with the noise moments of :mod:`.log_snr`).
On CLD this is the operator form of :mod:`.log_snr`, and order 1 is gDDIM's deterministic
step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.samplers.log_snr import (
    LogSNRMultistep,
    LogSNRSteps,
    MultistepPlan,
    data_rows,
    log_snr_steps,
    stack_steps,
    weighted,
)
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["DPMSolver", "dpm_solver_orders", "dpm_solver_plan"]

SolverType = Literal["midpoint", "heun"]
Algorithm = Literal["dpmsolver++", "sde-dpmsolver++", "dpmsolver"]


def dpm_solver_orders(
    steps: int, order: int, lower_order_final: bool, final_zero: bool
) -> list[int]:
    """Order of each step: warm start, then diffusers' lower-order final steps."""
    out = []
    for i in range(steps):
        o = min(order, i + 1)
        if i == steps - 1 and ((lower_order_final and steps < 15) or final_zero):
            o = 1
        elif i == steps - 2 and lower_order_final and steps < 15:
            o = min(o, 2)
        out.append(o)
    return out


def dpm_solver_plan(
    sde: LinearSDE,
    times: Tensor,
    order: int,
    solver_type: SolverType = "midpoint",
    algorithm: Algorithm = "dpmsolver++",
    lower_order_final: bool = True,
    nodes: int = 32,
) -> MultistepPlan:
    """The float64 plan of DPM-Solver++ (or SDE-DPM-Solver++) of ``order`` on ``times``."""
    target = "eps" if algorithm == "dpmsolver" else "x0"
    stochastic = algorithm == "sde-dpmsolver++"
    st = log_snr_steps(sde, times, order, target=target, stochastic=stochastic, nodes=nodes)
    final_zero = bool(torch.isinf(st.lam[-1]).all())
    orders = dpm_solver_orders(len(times) - 1, order, lower_order_final, final_zero)
    rows = [_step_weights(st, i, o, solver_type) for i, o in enumerate(orders)]
    weights = stack_steps(rows, st.moments[0])
    return MultistepPlan(
        times,
        st.psi_hat,
        weights,
        orders,
        target=target,
        factor=st.factor,
        to_data=data_rows(sde, times) if target == "x0" else None,
        noise=st.noise,
    )


def _step_weights(st: LogSNRSteps, i: int, order: int, solver_type: SolverType) -> list[LinearOp]:
    """Weights of ``D_i, D_{i-1}, D_{i-2}`` at step ``i``."""
    m = [mk[i] for mk in st.moments]
    if order == 1:
        return [m[0]]
    idx = torch.tensor([i])
    r0 = -st.ratio(idx, 1)
    if order == 2 and solver_type == "midpoint":
        c = 0.5 / r0
        return [weighted(m[0], 1 + c), weighted(m[0], -c)]
    if order == 2:
        return [m[0] + weighted(m[1], 1 / r0), weighted(m[1], -1 / r0)]
    r1 = st.ratio(idx, 1) - st.ratio(idx, 2)
    # d1_0 = (D0 - D1) / r0, d1_1 = (D1 - D2) / r1 as coefficient vectors over (D0, D1, D2)
    d1_0 = [1 / r0, -1 / r0, 0 * r0]
    d1_1 = [0 * r1, 1 / r1, -1 / r1]
    diff = [a - b for a, b in zip(d1_0, d1_1, strict=True)]
    d1 = [a + r0 / (r0 + r1) * b for a, b in zip(d1_0, diff, strict=True)]
    d2 = [b / (r0 + r1) for b in diff]  # ~ h^2 D'' / 2
    c2 = 0.5 if solver_type == "midpoint" else 1.0  # see the module docstring
    return [
        (m[0] if j == 0 else m[0] * 0.0) + weighted(m[1], d1[j]) + weighted(m[2], c2 * d2[j])
        for j in range(3)
    ]


class DPMSolver(LogSNRMultistep):
    """DPM-Solver++ multistep (data prediction) of ``order`` 1-3; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``log_snr`` is the papers' choice; ``edm`` = Karras rho = 7).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        order: 1, 2 or 3 (1 = DDIM).
        solver_type: ``midpoint`` or ``heun`` weighting of the first difference (order 2).
        algorithm: ``dpmsolver++`` (data prediction, PF-ODE), ``sde-dpmsolver++`` (reverse
            SDE, with noise; 1x1-block SDEs) or ``dpmsolver`` (noise prediction, PF-ODE: the
            same formulas with eps in place of ``D``; needs ``t_min > 0``).
        lower_order_final: lower the last steps' orders when ``steps < 15`` (diffusers' rule).
        quadrature_nodes: Gauss-Legendre nodes per step for CLD's moments.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    run_name = "dpm_solver"

    def __init__(
        self,
        steps: int = 20,
        grid: GridKind = "log_snr",
        t_min: float | None = None,
        t_max: float | None = None,
        order: int = 2,
        solver_type: SolverType = "midpoint",
        algorithm: Algorithm = "dpmsolver++",
        lower_order_final: bool = True,
        quadrature_nodes: int = 32,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if order not in (1, 2, 3):
            raise ValueError(f"DPMSolver.order must be 1, 2 or 3, got {order}")
        if solver_type not in ("midpoint", "heun"):
            raise ValueError(
                f"DPMSolver.solver_type must be 'midpoint' or 'heun', got {solver_type!r}"
            )
        if algorithm not in ("dpmsolver++", "sde-dpmsolver++", "dpmsolver"):
            raise ValueError(
                "DPMSolver.algorithm must be 'dpmsolver++', 'sde-dpmsolver++' or 'dpmsolver', "
                f"got {algorithm!r}"
            )
        if quadrature_nodes < 2:
            raise ValueError(f"DPMSolver.quadrature_nodes must be >= 2, got {quadrature_nodes}")
        self.order, self.solver_type, self.algorithm = int(order), solver_type, algorithm
        self.lower_order_final, self.quadrature_nodes = bool(lower_order_final), quadrature_nodes
        self.stochastic = algorithm == "sde-dpmsolver++"

    def check_sde(self, sde: LinearSDE) -> None:
        if self.stochastic and sde.block != 1:
            raise ValueError(
                f"DPMSolver.algorithm='sde-dpmsolver++' is implemented for 1x1-block SDEs only, "
                f"not {type(sde).__name__}; use algorithm='dpmsolver++', or 'gddim' with lam > 0"
            )
        super().check_sde(sde)

    def build_plan(self, sde: LinearSDE, times: Tensor) -> MultistepPlan:
        return dpm_solver_plan(
            sde,
            times,
            self.order,
            self.solver_type,
            self.algorithm,
            self.lower_order_final,
            self.quadrature_nodes,
        )
