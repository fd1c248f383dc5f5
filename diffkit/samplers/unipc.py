"""UniPC: the unified predictor UniP and corrector UniC, data prediction [UniPC, 2302.04867,
Algs. 2-3, B(h) variants].

Step ``t_i -> t_{i+1}`` with ``h = lambda_{i+1} - lambda_i``, ratios ``r_k = (lambda_{i-k} -
lambda_i) / h`` and differences ``D1_k = (D_{i-k} - D_i) / r_k`` (:mod:`.log_snr` gives
``Psihat`` and the moments ``M_k``; on VP ``M_k = alpha_s q_k(h)``)::

    UniP-p:  u' = Psihat u + M_0 D_i + sum_{k<p} rho_k D1_k,
    UniC-p:  u_{i+1} <- Psihat u_i + M_0 D_i + sum_{k<p} rho_k D1_k + rho_p (D_{i+1} - D_i),

where ``rho`` solves the Vandermonde system ``sum_k r_k^m rho_k = M_{m+1}`` (``r_p = 1`` for
the corrector), except for UniP-2 and UniC-1, which use ``rho = B(h) / (e^{-h} - 1) M_0 / 2``
with ``B(h) = -h`` (``bh1``) or ``e^{-h} - 1`` (``bh2``). With ``predict_x0=False`` the same
formulas interpolate eps (``h -> -h`` in ``B``, noise moments). ``D_{i+1}`` is the model output at
the predicted point, reused by the next predictor, so NFE = steps; the last point is not
corrected. ``lower_order_final`` lowers the order to the steps left (diffusers' rule).
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
    phi,
    phi_noise,
    stack_steps,
    weighted,
)
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.time_grids import GridKind

__all__ = ["UniPC", "unipc_orders", "unipc_plan"]

SolverType = Literal["bh1", "bh2"]


def unipc_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Predictor order of each step (warm start; the steps left when ``lower_order_final``)."""
    return [min(order, steps - i if lower_order_final else order, i + 1) for i in range(steps)]


def unipc_plan(
    sde: LinearSDE,
    times: Tensor,
    order: int,
    solver_type: SolverType = "bh2",
    corrector: bool = True,
    lower_order_final: bool = True,
    predict_x0: bool = True,
    nodes: int = 32,
) -> MultistepPlan:
    """The float64 plan of UniPC-``order`` on ``times``."""
    target = "x0" if predict_x0 else "eps"
    st = log_snr_steps(sde, times, order + 1, target=target, nodes=nodes)
    h = st.h
    phi_1 = phi(h, 0) if predict_x0 else phi_noise(h, 0)  # |e^{-+h} - 1|
    b_ratio = h / phi_1 if solver_type == "bh1" else torch.ones_like(h)  # B(h) / (h phi_1)
    orders = unipc_orders(len(times) - 1, order, lower_order_final)
    if orders[-1] > 1 and bool(torch.isinf(st.lam[-1]).any()):
        raise ValueError(
            f"UniPC: the last step goes to zero noise, where an order-{orders[-1]} step is "
            "undefined; use lower_order_final=True or a grid with t_min > 0"
        )
    predict = [_extra(st, b_ratio, i, o, corrector=False) for i, o in enumerate(orders)]
    rows = []
    for i, terms in enumerate(predict):
        row = _spread(terms) or [None]
        row[0] = st.moments[0][i] + (row[0] if row[0] is not None else st.moments[0][i] * 0.0)
        rows.append(row)
    weights = stack_steps(rows, st.moments[0])
    to_data = data_rows(sde, times) if predict_x0 else None
    plan = MultistepPlan(
        times, st.psi_hat, weights, orders, target=target, factor=st.factor, to_data=to_data
    )
    if corrector:
        correct_rows: list[list[LinearOp | None]] = [[None]]
        for i in range(1, len(orders)):
            c = _extra(st, b_ratio, i - 1, orders[i - 1], corrector=True)
            p = predict[i - 1]  # the predictor terms this correction replaces
            correct_rows.append(_spread(c, shift=1, minus=p))
        correct = stack_steps(correct_rows, st.moments[0])
        plan = MultistepPlan(
            times,
            st.psi_hat,
            weights,
            orders,
            target=target,
            factor=st.factor,
            to_data=to_data,
            correct=correct,
            correct_order=[0, *orders[:-1]],
        )
    for w in [*plan.weights, *(plan.correct or [])]:
        if not bool(torch.isfinite(w.coef).all()):
            raise ValueError(
                "UniPC: non-finite coefficients on this grid (B(h) = h into zero noise); use "
                "solver_type='bh2', lower_order_final=True or a grid with t_min > 0"
            )
    return plan


def _extra(
    st: LogSNRSteps, b_ratio: Tensor, i: int, p: int, *, corrector: bool
) -> list[tuple[LinearOp, Tensor | None]]:
    """The terms ``rho_k D1_k`` of step ``i`` at order ``p`` as ``(rho_k, r_k)`` (``r_k = None``
    for the corrector's last difference ``D_{i+1} - D_i``)."""
    idx = torch.tensor([i])
    r = [st.ratio(idx, k) for k in range(1, p)]
    m = [mk[i] for mk in st.moments]
    n = p if corrector else p - 1
    if n == 0:
        return []
    if n == 1 and (p == 2 or corrector):  # UniP-2, UniC-1
        rho = [weighted(m[0], 0.5 * b_ratio[i : i + 1])]
    else:
        nodes = [*r, torch.ones_like(r[0])] if corrector else r
        vander = torch.stack([torch.stack([x**row for x in nodes], -1) for row in range(n)], -2)
        inv = torch.linalg.inv(vander)
        rho = [_sum([weighted(m[row + 1], inv[..., k, row]) for row in range(n)]) for k in range(n)]
    return list(zip(rho, [*r, None] if corrector else r, strict=True))


def _spread(
    terms: list[tuple[LinearOp, Tensor | None]],
    *,
    shift: int = 0,
    minus: list[tuple[LinearOp, Tensor | None]] = (),
) -> list[LinearOp | None]:
    """Weights over the history slots of ``sum rho_k (D_k - D_0) / r_k`` (slots shifted by
    ``shift``; the corrector's last term is ``D_{-1} - D_0`` in slots ``0`` and ``1``), minus
    the terms ``minus`` (shifted alike)."""
    slots: dict[int, LinearOp] = {}

    def add(j: int, op: LinearOp) -> None:
        slots[j] = op if j not in slots else slots[j] + op

    for sign, group in ((1.0, terms), (-1.0, minus)):
        for k, (rho, r) in enumerate(group, start=1):
            if r is None:  # D_{i+1} - D_i
                add(0, rho * sign)
                add(1, rho * -sign)
            else:
                w = weighted(rho, sign / r)
                add(k + shift, w)
                add(shift, -w)
    return [slots.get(j) for j in range(max(slots) + 1)] if slots else []


def _sum(ops: list[LinearOp]) -> LinearOp:
    out = ops[0]
    for op in ops[1:]:
        out = out + op
    return out


class UniPC(LogSNRMultistep):
    """UniPC (UniP-p predictor with the UniC corrector) of ``order`` 1-3; 1 NFE per step.

    Args:
        steps: number of steps.
        grid: time grid (``log_snr``; ``edm`` = Karras rho = 7).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: ``T``).
        order: predictor order p in 1..3 (with the corrector, order p + 1).
        solver_type: ``bh1`` (B(h) = h) or ``bh2`` (B(h) = e^h - 1).
        corrector: apply UniC (free: it reuses the next model output).
        lower_order_final: lower the last steps' orders to the steps left (diffusers' rule).
        predict_x0: interpolate the data prediction (``True``) or eps (``False``, with the
            noise moments of :mod:`.log_snr`; needs ``t_min > 0``).
        quadrature_nodes: Gauss-Legendre nodes per step for CLD's moments.
        denoise_final: end with a Tweedie denoising step at ``t_min`` (+1 NFE).
        progress: show a progress bar.
    """

    run_name = "unipc"

    def __init__(
        self,
        steps: int = 20,
        grid: GridKind = "log_snr",
        t_min: float | None = None,
        t_max: float | None = None,
        order: int = 2,
        solver_type: SolverType = "bh2",
        corrector: bool = True,
        lower_order_final: bool = True,
        predict_x0: bool = True,
        quadrature_nodes: int = 32,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        super().__init__(steps, grid, t_min, t_max, denoise_final, progress)
        if order not in (1, 2, 3):
            raise ValueError(f"UniPC.order must be 1, 2 or 3, got {order}")
        if solver_type not in ("bh1", "bh2"):
            raise ValueError(f"UniPC.solver_type must be 'bh1' or 'bh2', got {solver_type!r}")
        if quadrature_nodes < 2:
            raise ValueError(f"UniPC.quadrature_nodes must be >= 2, got {quadrature_nodes}")
        self.order, self.solver_type, self.corrector = int(order), solver_type, bool(corrector)
        self.lower_order_final, self.quadrature_nodes = bool(lower_order_final), quadrature_nodes
        self.predict_x0 = bool(predict_x0)

    def build_plan(self, sde: LinearSDE, times: Tensor) -> MultistepPlan:
        return unipc_plan(
            sde,
            times,
            self.order,
            self.solver_type,
            self.corrector,
            self.lower_order_final,
            self.predict_x0,
            self.quadrature_nodes,
        )
