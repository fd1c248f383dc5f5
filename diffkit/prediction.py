"""What a score model returns, with operator-aware conversions between targets.

A *score model* is any callable ``model(u_t, t) -> Prediction`` (``u_t``: ``(B, *state)``,
``t``: ``(B,)``, 0 = data). Trained networks (through
:class:`diffkit.denoisers.parameterization.Parameterization`) and the exact scores of
:mod:`diffkit.sdes.exact` both have this interface, so samplers, losses and metrics cannot tell
them apart.

Conversions, for the kernel ``u_t = A u_0 + K eps`` with ``A = Psi(t, 0)`` and ``K K^T = Sigma``
[Song+21; gDDIM, 2206.05564 (thesis eqs. 7.16-7.17); docs/background/sdes.md#linear-family]:

* ``score = -K^{-T} eps``      and ``eps = -K^T score``
* ``u_0 = A^{-1} (u_t - K eps)`` and ``eps = K^{-1} (u_t - A u_0)``
* ``v = alpha eps - sigma x_0`` for variance-preserving scalar kernels only [PD, 2202.00512].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import Tensor

from diffkit.sdes.base import GaussianKernel
from diffkit.sdes.operators import LinearOp

__all__ = ["TARGETS", "GridScoreModel", "Prediction", "ScoreModel", "Target", "on_grid"]

Target = Literal["eps", "x0", "v", "score"]
TARGETS: tuple[str, ...] = ("eps", "x0", "v", "score")


@dataclass
class Prediction:
    """A model output ``raw`` in parameterisation ``target`` at ``(u_t, t)``.

    Attributes:
        u_t: ``(B, *state)``.
        t: ``(B,)`` float64.
        raw: ``(B, *state)``; the network output in ``target`` (``x0`` is the state ``u_0``).
        kernel: the SDE's kernel at ``t`` (``eps`` is defined against ``kernel.scale``).
        target: which quantity ``raw`` is.
        velocity_only: the model knows only the velocity half of the score (CLD hybrid score
            matching); the position half of :meth:`score` is zero and must not be used.
    """

    u_t: Tensor
    t: Tensor
    raw: Tensor
    kernel: GaussianKernel
    target: Target
    velocity_only: bool = False
    _cache: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def eps(self, factor: LinearOp | None = None) -> Tensor:
        """Noise estimate against ``factor`` (default: the kernel's scale), ``(B, *state)``.

        ``eps_K = -K^T score``; for ``factor = R`` this is gDDIM's ``eps_R``.
        """
        if factor is None:
            if "eps" not in self._cache:
                self._cache["eps"] = self._eps_default()
            return self._cache["eps"]
        self._require_full("an eps against a custom factor")
        return -factor.T.apply(self.score())

    def _eps_default(self) -> Tensor:
        k = self.kernel
        if self.target == "eps":
            return self.raw
        if self.target == "x0":
            return k.scale.solve(self.u_t - k.mean_op.apply(self.raw))
        if self.target == "score":
            self._require_full("eps")
            return -k.scale.T.apply(self.raw)
        # v: x0 = alpha u - sigma v, eps = sigma u + alpha v
        alpha, sigma = self._alpha_sigma()
        return sigma * self.u_t + alpha * self.raw

    def score(self) -> Tensor:
        """``grad log p_t(u_t)``, ``(B, *state)``."""
        if "score" not in self._cache:
            if self.target == "score":
                self._cache["score"] = self.raw
            else:
                self._cache["score"] = -self.kernel.scale.T.solve(self.eps())
        return self._cache["score"]

    def x0(self) -> Tensor:
        """``E[u_0 | u_t]`` in state space, ``(B, *state)``."""
        if "x0" not in self._cache:
            if self.target == "x0":
                self._cache["x0"] = self.raw
            elif self.target == "v":
                alpha, sigma = self._alpha_sigma()
                self._cache["x0"] = alpha * self.u_t - sigma * self.raw
            else:
                self._require_full("x0")
                k = self.kernel
                self._cache["x0"] = k.mean_op.solve(self.u_t - k.scale.apply(self.eps()))
        return self._cache["x0"]

    def v(self) -> Tensor:
        """v-prediction ``alpha eps - sigma x0`` (variance-preserving scalar kernels)."""
        if self.target == "v":
            return self.raw
        alpha, sigma = self._alpha_sigma()
        return alpha * self.eps() - sigma * self.x0()

    def _alpha_sigma(self) -> tuple[Tensor, Tensor]:
        k = self.kernel
        if not (k.mean_op.is_scalar and k.scale.is_scalar):
            raise ValueError(
                "the 'v' target needs a scalar variance-preserving kernel (vp); use 'eps' or 'x0'"
            )
        shape = (-1,) + (1,) * (self.u_t.dim() - 1)
        alpha = k.mean_op.coef[:, 0, 0].to(self.u_t.dtype).reshape(shape)
        sigma = k.scale.coef[:, 0, 0].to(self.u_t.dtype).reshape(shape)
        return alpha, sigma

    def _require_full(self, what: str) -> None:
        if self.velocity_only:
            raise ValueError(
                f"{what} needs the full score, but this model predicts only the velocity score "
                "(CLD hybrid score matching); use a sampler that needs only G G^T score "
                "(euler_maruyama, heun) or train with the 'dsm' loss"
            )


class ScoreModel(Protocol):
    """``model(u_t, t) -> Prediction``; ``u_t``: ``(B, *state)``, ``t``: ``(B,)``."""

    def __call__(self, u_t: Tensor, t: Tensor) -> Prediction: ...


class GridScoreModel(Protocol):
    """``grid_model(u_t, i) -> Prediction`` at the ``i``-th time of a fixed grid (0 = data)."""

    def __call__(self, u_t: Tensor, i: int) -> Prediction: ...


def on_grid(model: ScoreModel, times: Tensor) -> GridScoreModel:
    """``model`` evaluated on the grid ``times`` ``(N + 1,)`` float64 (samplers' fast path).

    A model with an ``on_grid(times)`` method (e.g. :class:`~diffkit.denoisers.parameterization.
    Parameterization`, which precomputes its kernel and conditioning once per grid) provides its
    own; any other score model is called as ``model(u_t, times[i])`` with the time broadcast over
    the batch.
    """
    method = getattr(model, "on_grid", None)
    if callable(method):
        return method(times)
    return _TimeIndexed(model, times)


class _TimeIndexed:
    """A plain score model on a grid: ``model(u_t, times[i].expand(B))``."""

    def __init__(self, model: ScoreModel, times: Tensor) -> None:
        self.model, self.times = model, times
        self._rows: tuple[torch.device, tuple[Tensor, ...]] | None = None

    def __call__(self, u_t: Tensor, i: int) -> Prediction:
        if self._rows is None or self._rows[0] != u_t.device:
            self._rows = (u_t.device, self.times.to(u_t.device).unbind())
        return self.model(u_t, self._rows[1][i].expand(u_t.shape[0]))


def broadcast_time(t: Tensor | float, batch: int, device: torch.device | None = None) -> Tensor:
    """A time (number, 0-d or ``(B,)``) as a float64 ``(B,)`` tensor."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device).reshape(-1)
    return t.expand(batch) if t.numel() == 1 else t
