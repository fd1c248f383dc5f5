"""Classifier-free guidance as a score-model wrapper [CFG, Ho & Salimans 2022, 2207.12598].

A class-conditional model trained with label dropout (a fraction of the labels replaced by the
"no class" label, see ``DiffusionModule.label_dropout``) predicts both ``eps(u_t, t, y)`` and
``eps(u_t, t, none)``. Guidance with scale ``w`` samples with

    eps_w = eps(u_t, t, none) + w (eps(u_t, t, y) - eps(u_t, t, none))

(``w = 1``: the conditional model, ``w = 0``: the unconditional one, ``w > 1``: guided). The two
predictions share ``u_t`` and ``t``, and every target (eps, x0, v, score) is an affine function
of eps with the same offset, so the combination with weights ``(1 - w, w)`` is the same in any
target; it is taken in the model's own output target.

Cost: with ``batched=True`` (default) one network call on the doubled batch ``[u_t; u_t]`` with
labels ``[y; none]``; otherwise two calls. Either way the network evaluates every sample twice,
and :attr:`GuidedModel.evaluations_per_call` = 2 makes samplers count NFE = 2 per model call
(at ``w = 1`` the wrapper calls the conditional model once and counts 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from diffkit.prediction import Prediction, broadcast_time
from diffkit.sdes.base import GaussianKernel

__all__ = ["NULL_CLASS", "GuidedModel", "guided_combination"]

NULL_CLASS = -1
"""The "no class" label: class embeddings map negative labels to their learned null row."""


def guided_combination(uncond: Tensor, cond: Tensor, scale: float) -> Tensor:
    """``uncond + scale (cond - uncond)`` (any target; see the module docstring)."""
    return torch.lerp(uncond, cond, scale) if scale != 1.0 else cond


class GuidedModel:
    """Classifier-free guidance of a class-conditional score model.

    Args:
        model: a conditional score model ``model(u_t, t, cond) -> Prediction`` (e.g. a
            :class:`~diffkit.denoisers.parameterization.Parameterization`), optionally with
            ``on_grid(times, cond)``.
        cond: class labels ``(B,)`` (negative: no class).
        scale: guidance scale ``w`` (1: the conditional model).
        batched: evaluate the conditional and unconditional predictions in one network call on
            a doubled batch.
    """

    def __init__(self, model: Any, cond: Tensor, scale: float, *, batched: bool = True) -> None:
        if not torch.isfinite(torch.tensor(float(scale))):
            raise ValueError(f"guidance_scale must be finite, got {scale}")
        self.model, self.cond, self.scale, self.batched = model, cond, float(scale), batched
        self.evaluations_per_call = 1 if self.scale == 1.0 else 2

    def _both(self) -> Tensor:
        return torch.cat([self.cond, torch.full_like(self.cond, NULL_CLASS)])

    def _combine(self, pc: Prediction, pu: Prediction, u_t: Tensor, b: int) -> Prediction:
        if pc.velocity_only != pu.velocity_only or pc.target != pu.target:
            raise ValueError("guidance: conditional and unconditional predictions differ in kind")
        raw = guided_combination(pu.raw, pc.raw, self.scale)
        return Prediction(
            u_t, pc.t[:b], raw, _rows(pc.kernel, b), pc.target, velocity_only=pc.velocity_only
        )

    def _split(self, pred: Prediction, u_t: Tensor) -> Prediction:
        b = u_t.shape[0]
        pc = Prediction(pred.u_t[:b], pred.t[:b], pred.raw[:b], pred.kernel, pred.target)
        pu = Prediction(pred.u_t[b:], pred.t[b:], pred.raw[b:], pred.kernel, pred.target)
        pc.velocity_only = pu.velocity_only = pred.velocity_only
        return self._combine(pc, pu, u_t, b)

    def __call__(self, u_t: Tensor, t: Tensor | float) -> Prediction:
        if self.scale == 1.0:
            return self.model(u_t, t, self.cond)
        b = u_t.shape[0]
        if self.batched:
            tt = broadcast_time(t, b, u_t.device)
            return self._split(
                self.model(torch.cat([u_t, u_t]), torch.cat([tt, tt]), self._both()), u_t
            )
        pc = self.model(u_t, t, self.cond)
        pu = self.model(u_t, t, torch.full_like(self.cond, NULL_CLASS))
        return self._combine(pc, pu, u_t, b)

    def on_grid(self, times: Tensor) -> Callable[[Tensor, int], Prediction]:
        """``(u_t, i) -> Prediction`` at ``times[i]`` (the model's precomputed grid path when
        it has ``on_grid(times, cond)``)."""
        method = getattr(self.model, "on_grid", None)
        rows = times.unbind()

        def at(cond: Tensor) -> Callable[[Tensor, int], Prediction]:
            if callable(method):
                return method(times, cond)
            return lambda u, i: self.model(u, rows[i].to(u.device), cond)

        if self.scale == 1.0:
            return at(self.cond)
        if self.batched:
            both = at(self._both())
            return lambda u, i: self._split(both(torch.cat([u, u]), i), u)
        cond, uncond = at(self.cond), at(torch.full_like(self.cond, NULL_CLASS))
        return lambda u, i: self._combine(cond(u, i), uncond(u, i), u, u.shape[0])


def _rows(kernel: GaussianKernel, b: int) -> GaussianKernel:
    """The first ``b`` rows of a kernel evaluated on a doubled batch (one row broadcasts)."""
    if kernel.mean_op.n <= b:
        return kernel
    return GaussianKernel(kernel.mean_op[:b], kernel.cov[:b], kernel.scale[:b])
