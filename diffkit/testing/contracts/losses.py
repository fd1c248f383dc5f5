"""Contract checks every :class:`~diffkit.losses.base.Loss` (built-in or plugin) must pass.

Run on Gaussian data ``N(0, diag lam)`` with its exact score
(:class:`~diffkit.sdes.exact.ExactScoreModel`) as the model:

1. **per-sample values**: ``LossOutput.loss`` is ``(B,)``, finite and non-negative, and
   ``LossOutput.t`` is ``(B,)`` inside ``[0, T]``;
2. **determinism**: equal generators give equal losses and the global RNG is never touched;
3. **minimiser**: the exact score has a lower loss than a scaled one (``c s``, ``c = 1.5``) on
   the same noise draws -- denoising score matching is minimised by the true score
   [Vincent 2011; docs/background/losses.md#dsm];
4. **gradient flow**: the gradient of the mean loss in ``c`` is finite and points back to
   ``c = 1``.

:class:`LossContract` bundles them for pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from diffkit.losses.base import Loss, LossOutput
from diffkit.prediction import Prediction
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import ExactScoreModel, Gaussian

__all__ = ["LossContract", "check_loss"]

LAM = (0.05, 0.5, 2.0)


class _ScaledScore(nn.Module):
    """The exact score times a learnable scalar ``c``."""

    def __init__(self, exact: ExactScoreModel, c: float) -> None:
        super().__init__()
        self.exact = exact
        self.c = nn.Parameter(torch.tensor(c, dtype=torch.float64))

    def forward(self, u: Tensor, t: Tensor, cond: Tensor | None = None) -> Prediction:
        p = self.exact(u.detach(), t)
        score = p.score().to(torch.float64) * self.c
        return Prediction(
            u, t, score.to(u.dtype) if u.dtype != torch.float64 else score, p.kernel, "score"
        )


def check_loss(
    loss: Loss, sde: LinearSDE, *, lam: Sequence[float] = LAM, batch: int = 2048
) -> dict[str, float]:
    """Run every loss check; returns the mean losses of the exact and the scaled score."""
    name = type(loss).__name__
    lam_t = torch.tensor(lam, dtype=torch.float64)
    exact = ExactScoreModel(Gaussian(torch.zeros_like(lam_t), lam_t), sde)
    x0 = lam_t.sqrt() * torch.randn(
        batch, len(lam), generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )

    def run(model: nn.Module, seed: int = 1) -> LossOutput:
        return loss(model, sde, x0, generator=torch.Generator().manual_seed(seed))

    before = torch.get_rng_state()
    out = run(_ScaledScore(exact, 1.0))
    if not torch.equal(torch.get_rng_state(), before):
        raise AssertionError(f"{name} used the global RNG: draw from the generator argument")
    if tuple(out.loss.shape) != (batch,) or tuple(out.t.shape) != (batch,):
        raise AssertionError(
            f"{name}: loss {tuple(out.loss.shape)} and t {tuple(out.t.shape)}, expected "
            f"({batch},) each (per-sample, unreduced)"
        )
    if not (torch.isfinite(out.loss).all() and (out.loss >= 0).all()):
        raise AssertionError(f"{name}: per-sample losses must be finite and >= 0")
    if not (out.t.min() >= 0 and out.t.max() <= sde.T):
        raise AssertionError(f"{name}: training times outside [0, T = {sde.T}]")
    if not torch.equal(run(_ScaledScore(exact, 1.0)).loss, out.loss):
        raise AssertionError(f"{name}: equal generators gave different losses")
    scaled = _ScaledScore(exact, 1.5)
    worse = run(scaled).loss.mean()
    best = out.loss.mean().detach()
    if not best < worse.detach():
        raise AssertionError(
            f"{name}: the exact score's loss {float(best):.4g} is not below the scaled score's "
            f"{float(worse.detach()):.4g}: the loss is not minimised by the true score"
        )
    worse.backward()
    grad = scaled.c.grad
    if grad is None or not torch.isfinite(grad) or not grad > 0:
        raise AssertionError(f"{name}: d loss / d c = {grad} at c = 1.5, expected > 0")
    return {"exact": float(best), "scaled": float(worse.detach())}


class LossContract:
    """Base class of pytest contract tests for a loss.

    Subclass it as ``class TestMyLoss(LossContract)`` and set ``make_loss`` and ``make_sde``
    (an SDE the loss is defined for).
    """

    make_loss: ClassVar[Callable[[], Loss]]
    make_sde: ClassVar[Callable[[], LinearSDE]]

    def test_loss_contract(self) -> None:
        check_loss(type(self).make_loss(), type(self).make_sde())
