"""The sampler interface: stateless samplers with per-grid float64 plans and honest NFE.

A sampler integrates the reverse family from ``t_max ~ T`` down to ``t_min`` on a decreasing
float64 grid. Coefficients are computed once per (SDE, grid) in float64 by :meth:`Sampler.plan`
and cached; :meth:`Sampler.sample` is a loop of tensor operations that calls the model and counts
every call (NFE = model evaluations actually made).
"""

from __future__ import annotations

import abc
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from diffkit.prediction import GridScoreModel, Prediction, ScoreModel, on_grid
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.time_grids import GridKind, time_grid

__all__ = [
    "CountingModel",
    "Plan",
    "SampleResult",
    "Sampler",
    "SamplerPlan",
    "require_full_score",
    "step_time",
]


def require_full_score(pred: Prediction, sampler: str) -> None:
    """Raise ``ValueError`` when ``pred`` carries only CLD's velocity score (HSM models)."""
    if pred.velocity_only:
        raise ValueError(
            f"sampler '{sampler}' needs the full score (an eps for position and velocity), but "
            "this model predicts only the velocity score (CLD hybrid score matching); sample it "
            "with 'euler_maruyama', 'heun' or 'pc', which use only G G^T score, or train with "
            "the 'dsm' loss"
        )


def step_time(times: Tensor, i: int, like: Tensor) -> Tensor:
    """Grid time ``times[i]`` as a float64 ``(B,)`` tensor on ``like``'s device."""
    return times[i].to(like.device).expand(like.shape[0])


@dataclass
class SampleResult:
    """``x``: samples in data space ``(B, *S)``; ``u``: final states ``(B, *state)``;
    ``nfe``: model evaluations per sample; ``times``: the grid used (float64);
    ``trajectory``: states after each step (``record_trajectory=True``), else ``None``;
    ``seconds``: wall time of the sampling loop."""

    x: Tensor
    u: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None = None
    seconds: float = 0.0


class CountingModel:
    """Wraps a score model and counts its calls (``nfe``).

    ``model(u, t)`` evaluates at any time ``t`` ``(B,)``; with a grid ``times`` ``(N + 1,)``,
    ``model.at(u, i)`` evaluates at ``times[i]`` through :func:`diffkit.prediction.on_grid`
    (precomputed conditioning; what samplers use on their own grid). A model that evaluates
    its network more than once per call (classifier-free guidance) says so in
    ``evaluations_per_call``, and each call counts that many.
    """

    def __init__(self, model: ScoreModel, times: Tensor | None = None) -> None:
        self.model, self.nfe = model, 0
        self.cost = int(getattr(model, "evaluations_per_call", 1))
        self.grid: GridScoreModel | None = None if times is None else on_grid(model, times)

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        self.nfe += self.cost
        return self.model(u, t)

    def at(self, u: Tensor, i: int) -> Prediction:
        """The prediction at the grid's ``i``-th time."""
        if self.grid is None:
            raise RuntimeError("CountingModel.at needs the grid: CountingModel(model, times)")
        self.nfe += self.cost
        return self.grid(u, i)


@dataclass(frozen=True)
class Plan:
    """Per-(SDE, grid) precomputed data of a sampler: the grid ``times`` ``(N + 1,)`` float64;
    samplers add typed fields (operator tables indexed by step)."""

    times: Tensor


@dataclass(frozen=True)
class SamplerPlan(Plan):
    """A plan whose coefficients are a dict of float64 tensors or
    :class:`~diffkit.sdes.operators.LinearOp` tables indexed by step."""

    coefs: dict[str, Any]


class Sampler(abc.ABC):
    """Base class of samplers.

    Args:
        steps: number of steps (grid intervals).
        grid: time grid kind (``uniform`` | ``quadratic`` | ``log_snr`` | ``edm``).
        t_min: truncation time (default: the SDE's ``t_min``).
        t_max: start time (default: the SDE's ``T``).
        denoise_final: end with a Tweedie denoising step at ``t_min`` (costs one NFE).
        progress: show a progress bar over steps.
    """

    stochastic: ClassVar[bool] = False

    def __init__(
        self,
        steps: int = 50,
        grid: GridKind = "quadratic",
        t_min: float | None = None,
        t_max: float | None = None,
        denoise_final: bool = False,
        progress: bool = False,
    ) -> None:
        if steps < 1:
            raise ValueError(f"{type(self).__name__}.steps must be >= 1, got {steps}")
        self.steps, self.grid, self.t_min, self.t_max = int(steps), grid, t_min, t_max
        self.denoise_final, self.progress = bool(denoise_final), bool(progress)
        # Plans keyed by (id(sde), grid settings); the weak reference detects a reused id.
        self._plans: dict[tuple, tuple[weakref.ref, Plan]] = {}
        # Hook for guidance: a function ScoreModel -> ScoreModel applied before sampling.
        self.model_wrapper: Callable[[ScoreModel], ScoreModel] | None = None
        # Hook for exact (generator-free) variance propagation in tests and benchmarks: a
        # function u -> z replacing the N(0, I) draws (called once per noise draw, in order).
        self.noise_source: Callable[[Tensor], Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the plan cache (plans are rebuilt on use; weak references and
        float64 tables need not travel to DDP workers)."""
        state = self.__dict__.copy()
        state["_plans"] = {}
        return state

    def noise(self, u: Tensor, generator: torch.Generator | None) -> Tensor:
        """A standard normal draw shaped like ``u`` (or ``noise_source(u)`` when set)."""
        if self.noise_source is not None:
            return self.noise_source(u)
        return torch.randn(u.shape, generator=generator, device=u.device, dtype=u.dtype)

    def run_affine(
        self,
        model: CountingModel,
        u: Tensor,
        plan: SamplerPlan,
        feature: Callable[[Prediction, int], Tensor],
        *,
        generator: torch.Generator | None,
        on_step: Callable[[int, Tensor], None],
    ) -> Tensor:
        """The one-step loop ``u <- A_i u + B_i f(pred_i) [+ C_i z_i]`` of samplers whose step is
        affine in the state and one model quantity ``f`` (eps, score, ...); ``C`` (noise) is used
        when the plan has it."""
        A, B = plan.coefs["A"].steps(u), plan.coefs["B"].steps(u)
        C = plan.coefs["C"].steps(u) if "C" in plan.coefs else None
        for i in range(len(A)):
            f = feature(model.at(u, i), i).to(u.dtype)
            u = B[i].add(A[i](u), f)
            if C is not None:
                u = C[i].add(u, self.noise(u, generator))
            on_step(i, u)
        return u

    # ------------------------------------------------------------------ interface
    def check_sde(self, sde: LinearSDE) -> None:
        """Raise ``ValueError`` when this sampler is undefined for ``sde`` (with what to use)."""

    def times(self, sde: LinearSDE) -> Tensor:
        return time_grid(sde, self.steps, self.grid, t_min=self.t_min, t_max=self.t_max)

    def plan(self, sde: LinearSDE) -> Plan:
        """The cached plan for ``sde`` (float64; keyed by the SDE object and the grid)."""
        key = (id(sde), self.steps, self.grid, self.t_min, self.t_max)
        hit = self._plans.get(key)
        if hit is None or hit[0]() is not sde:
            self.check_sde(sde)
            times = self.times(sde)
            self._plans[key] = (weakref.ref(sde), self.build_plan(sde, times))
        return self._plans[key][1]

    def build_plan(self, sde: LinearSDE, times: Tensor) -> Plan:
        """The plan for ``times`` (default: :meth:`build_coefs` in a :class:`SamplerPlan`)."""
        return SamplerPlan(times=times, coefs=self.build_coefs(sde, times))

    def build_coefs(self, sde: LinearSDE, times: Tensor) -> dict[str, Any]:
        """Precompute per-step coefficients (float64) for ``times``."""
        return {}

    @abc.abstractmethod
    def run(
        self,
        model: CountingModel,
        sde: LinearSDE,
        u: Tensor,
        plan: Plan,
        *,
        generator: torch.Generator | None,
        on_step: Callable[[int, Tensor], None],
    ) -> Tensor:
        """Integrate from ``plan.times[0]`` to ``plan.times[-1]``; return the final state."""

    def expected_nfe(self, sde: LinearSDE | None = None) -> int:
        """Model evaluations one call to :meth:`sample` makes (``sde`` resolves defaults such as
        ``t_min`` where the count depends on them)."""
        return self.steps + int(self.denoise_final)

    # ------------------------------------------------------------------ driver
    @torch.no_grad()
    def sample(
        self,
        model: ScoreModel,
        sde: LinearSDE,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        u_T: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        record_trajectory: bool = False,
        callback: Callable[[int, Tensor], None] | None = None,
    ) -> SampleResult:
        """Draw samples.

        Args:
            model: score model ``(u_t, t) -> Prediction``.
            shape: ``(B, *data_shape)``.
            generator: source of the prior draw and of every noise increment.
            u_T: initial states ``(B, *state_shape)`` (default: drawn from the SDE's prior).
            callback: called as ``callback(step_index, u)`` after each step.
        """
        t0 = time.perf_counter()
        plan = self.plan(sde)
        if u_T is None:
            state = (shape[0], *sde.state_shape(tuple(shape[1:])))
            u = sde.prior_sample(state, generator=generator, device=device, dtype=dtype)
        else:
            u = u_T.to(device=device or u_T.device)
        wrapped = self.model_wrapper(model) if self.model_wrapper is not None else model
        counting = CountingModel(wrapped, plan.times)
        trajectory: list[Tensor] | None = [u] if record_trajectory else None
        bar = _progress(self.steps) if self.progress else None

        def on_step(i: int, x: Tensor) -> None:
            if trajectory is not None:
                trajectory.append(x)
            if callback is not None:
                callback(i, x)
            if bar is not None:
                bar.update(1)

        u = self.run(counting, sde, u, plan, generator=generator, on_step=on_step)
        if self.denoise_final:
            u = counting.at(u, len(plan.times) - 1).x0().to(u.dtype)
        if bar is not None:
            bar.close()
        return SampleResult(
            x=sde.project(u),
            u=u,
            nfe=counting.nfe,
            times=plan.times,
            trajectory=trajectory,
            seconds=time.perf_counter() - t0,
        )


def _progress(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="sampling", leave=False)
