"""Time grids optimised for a sampler on Gaussian data: minimise the exact W2 (or KL) of the
sampler's output law to the data ``N(0, diag lam)`` over the grid, by L-BFGS in float64 through
the sampler's own plan and loop [Watson+22, "Learning fast samplers by differentiating through
sample quality"; Sabour+24, "Align Your Steps", 2404.14507; Xue+24, 2402.17376 optimise bounds or
learned samples; with Gaussian data the objective is exact].

Parameterisation (monotone by construction): with ``lambda(t) = -log rho(t)`` (``rho`` the SDE's
noise level, increasing in t), the grid is ``lambda_0 = lambda(t_max) < lambda_1 < ... <
lambda_N = lambda(t_min)`` with increments ``(f / N + (1 - f) softmax(z)) (lambda_N - lambda_0)``
(``f = 1e-3`` keeps every step open); ``z = 0`` is the log-SNR grid. The end points are fixed:
``t_max`` (default T) is where the prior is the start law, and ``t_min`` is the truncation time,
the lowest time a trained network is asked about.

Caveat: a spectrum with few distinct eigenvalues (low-dimensional data) can be matched exactly
by many grids that are poor for the real, non-Gaussian data; prefer broad spectra (images).
Times come back through the SDE's ``t_from_noise_level`` with one implicit-function step, so the
gradient is exact even where that inverse is computed by bisection.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from diffkit.gaussian.propagation import Modes, kl_to_data, mode_cov, propagate, w2_to_data
from diffkit.gaussian.score import GaussianScore, data_cov
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.time_grids import GridKind, time_grid

if TYPE_CHECKING:
    from diffkit.samplers.base import Sampler

__all__ = ["GridObjective", "OptimizedGrid", "optimize_grid"]

Metric = Literal["w2", "kl"]
#: Share of the log-level range spread evenly over the steps, so no step collapses to zero.
MIN_FRACTION = 1e-3


@dataclass
class OptimizedGrid:
    """Result of :func:`optimize_grid`: ``times`` ``(steps + 1,)`` float64 (decreasing), the
    metric reached and the one of the initial grid, iterations and wall time."""

    times: Tensor
    value: float
    initial_value: float
    initial_grid: str
    metric: str
    nfe: int
    iterations: int
    seconds: float
    history: list[float] = field(default_factory=list)


class GridObjective:
    """The exact W2 / KL of ``sampler``'s output law to ``N(0, diag lam)`` as a differentiable
    function of the grid.

    Args:
        sampler: a deterministic sampler linear in the state (DDIM, DEIS, Heun, ...).
        sde: the forward SDE.
        lam: data variances in the shape the SDE sees (``(d,)`` for scalar SDEs, ``(C, H, W)``
            DCT-frequency variances for blurring).
        weights: multiplicities of ``lam`` (compressed spectra), same shape.
        metric: ``w2`` or ``kl`` (``KL(data || output)``).
        start: the start law's covariance ``(modes, k, k)`` (default: the SDE's prior).
    """

    def __init__(
        self,
        sampler: Sampler,
        sde: LinearSDE,
        lam: Tensor,
        *,
        weights: Tensor | None = None,
        metric: Metric = "w2",
        start: Tensor | None = None,
    ) -> None:
        if sampler.stochastic:
            raise ValueError(
                f"grid optimisation needs a deterministic sampler; {type(sampler).__name__} "
                "draws noise (use eta = 0 / no churn, or a deterministic sampler)"
            )
        if metric not in ("w2", "kl"):
            raise ValueError(f"metric must be 'w2' or 'kl', got {metric!r}")
        self.sampler, self.sde, self.metric = sampler, sde, metric
        self.lam = torch.as_tensor(lam, dtype=torch.float64)
        self.weights = weights
        self.modes = Modes(sde, tuple(self.lam.shape))
        self.model = GaussianScore(sde, data_cov(sde, self.lam))
        self.start = mode_cov(sde.prior_cov(), self.modes) if start is None else start
        self.nfe = 0

    def __call__(self, times: Tensor) -> Tensor:
        """The metric (0-d float64) of the sampler run on ``times`` (differentiable)."""
        cov, self.nfe = propagate(
            self.sampler, self.sde, self.model, self.start, self.modes, times=times
        )
        fn = w2_to_data if self.metric == "w2" else kl_to_data
        return fn(self.lam, cov, self.weights)

    # ----------------------------------------------------------------- parameterisation
    def log_levels(self, times: Tensor) -> Tensor:
        """``lambda(t) = -log rho(t)`` (increasing along a decreasing grid)."""
        return -self.sde.noise_level(times).log()

    def times_from_logits(self, z: Tensor, lam0: Tensor, lam1: Tensor) -> Tensor:
        """Grid from free logits ``z`` ``(N,)`` and fixed end levels (``lambda`` of t_max and
        t_min), end points exact."""
        n = z.numel()
        inc = (MIN_FRACTION / n + (1 - MIN_FRACTION) * torch.softmax(z, 0)) * (lam1 - lam0)
        inner = lam0 + torch.cumsum(inc, 0)[:-1]
        t_inner = _t_from_level(self.sde, (-inner).exp())
        t0, t1 = _t_from_level(self.sde, (-torch.stack([lam0, lam1])).exp()).detach()
        return torch.cat([t0.reshape(1), t_inner, t1.reshape(1)])


def _t_from_level(sde: LinearSDE, rho: Tensor) -> Tensor:
    """``t(rho)`` with the exact derivative ``1 / rho'(t)`` (one implicit-function step on the
    SDE's inverse, which may be a non-differentiable bisection)."""
    t0 = sde.t_from_noise_level(rho.detach()).detach()
    with torch.enable_grad():
        tt = t0.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(sde.noise_level(tt).sum(), tt)
    return t0 + (rho - rho.detach()) / slope


def optimize_grid(
    sampler: Sampler,
    sde: LinearSDE,
    lam: Tensor,
    *,
    weights: Tensor | None = None,
    metric: Metric = "w2",
    init: GridKind = "log_snr",
    t_min: float | None = None,
    t_max: float | None = None,
    iterations: int = 100,
    tolerance: float = 1e-9,
) -> OptimizedGrid:
    """The grid of ``sampler.steps`` steps minimising the exact ``metric`` of ``sampler``'s
    output law to ``N(0, diag lam)`` (see :class:`GridObjective`), from the ``init`` grid.

    ``t_min`` / ``t_max`` default to the sampler's, then the SDE's. L-BFGS (strong Wolfe line
    search) for at most ``iterations`` iterations, stopping when the relative change of the
    metric falls below ``tolerance``. The result is never worse than the initial grid.
    """
    t_start = time.perf_counter()
    objective = GridObjective(sampler, sde, lam, weights=weights, metric=metric)
    t_min = sampler.t_min if t_min is None else t_min
    t_max = sampler.t_max if t_max is None else t_max
    t_init = time_grid(sde, sampler.steps, init, t_min=t_min, t_max=t_max)
    if float(t_init[-1]) <= 0:
        raise ValueError("grid optimisation needs t_min > 0 (log noise levels are unbounded at 0)")
    with torch.no_grad():
        initial = float(objective(t_init))
    levels = objective.log_levels(t_init)
    lam0, lam1 = levels[0], levels[-1]
    share = torch.diff(levels) / (lam1 - lam0)
    z = (share - MIN_FRACTION / sampler.steps).clamp_min(1e-12).log().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [z],
        lr=1.0,
        max_iter=iterations,
        tolerance_grad=1e-12,
        tolerance_change=tolerance,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    history: list[float] = []

    def closure() -> Tensor:
        opt.zero_grad()
        value = objective(objective.times_from_logits(z, lam0, lam1))
        if not torch.isfinite(value):  # a degenerate trial grid: steer the line search away
            value = value.detach().nan_to_num(1e30, 1e30) + 0.0 * z.sum()
        value.backward()
        history.append(float(value.detach()))
        return value

    opt.step(closure)
    with torch.no_grad():
        times = objective.times_from_logits(z.detach(), lam0, lam1)
        value = float(objective(times))
    if not value <= initial:  # keep the initial grid rather than a worse or non-finite one
        times, value = t_init, initial
    times[0], times[-1] = t_init[0], t_init[-1]
    return OptimizedGrid(
        times=times.detach(),
        value=value,
        initial_value=initial,
        initial_grid=str(init),
        metric=metric,
        nfe=objective.nfe,
        iterations=len(history),
        seconds=time.perf_counter() - t_start,
        history=history,
    )
