"""Exponential moving average of the weights, on Lightning's ``WeightAveraging``.

``ema_k = ema_{k-1} + (1 - d_k) (w_k - ema_{k-1})`` after every ``update_every``-th optimizer step
(``torch.lerp``, so constant tensors such as SDE tables stay bit-identical). During the first
``warmup_steps`` optimizer steps the average is a copy of the live weights; with
``adaptive_decay`` the decay is ``d_n = min(decay, (1 + n) / (10 + n))`` for the ``n``-th update
after warm-up (TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` form, used by
score_sde).

What Lightning's ``WeightAveraging`` does with it (and diffkit relies on):

- checkpoints hold the EMA weights as ``state_dict`` and the live ones as
  ``current_model_state`` (plus ``averaging_state``: the update count); resuming restores both,
  so a resumed run continues bit-exactly;
- validation runs with the EMA weights swapped into the module (``on_validation_epoch_start`` /
  ``_end``), and at the end of training the EMA weights are copied into the module.

Sampling callbacks and ``DiffusionModule.sample`` take :meth:`EMA.averaged_module` (via
``DiffusionModule.sampling_module``), which is right whether or not the weights are swapped.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks.weight_averaging import WeightAveraging
from torch import Tensor

__all__ = ["EMA"]


class EMA(WeightAveraging):
    """EMA of the module's parameters and floating buffers, used for sampling and metrics.

    Args:
        decay: EMA decay per update (0 < decay < 1); the average spans ~1 / (1 - decay) updates.
        warmup_steps: optimizer steps during which the average copies the live weights.
        update_every: update after every this many optimizer steps (after warm-up).
        adaptive_decay: use ``min(decay, (1 + n) / (10 + n))`` for the n-th update.
        device: where to keep the average (``None``: the module's device; ``"cpu"`` saves
            accelerator memory).
    """

    def __init__(
        self,
        decay: float = 0.9999,
        warmup_steps: int = 0,
        update_every: int = 1,
        adaptive_decay: bool = False,
        device: str | None = None,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema: decay must be in (0, 1), got {decay}")
        if warmup_steps < 0 or update_every < 1:
            raise ValueError(
                f"ema: need warmup_steps >= 0 and update_every >= 1, got warmup_steps="
                f"{warmup_steps}, update_every={update_every}"
            )
        super().__init__(device=device, use_buffers=True, avg_fn=self._lerp)
        self.decay, self.warmup_steps, self.update_every = (
            float(decay),
            int(warmup_steps),
            int(update_every),
        )
        self.adaptive_decay = bool(adaptive_decay)
        self._current_decay = self.decay
        self._module: L.LightningModule | None = None
        self._swapped = False

    # ------------------------------------------------------------------ averaging
    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every ``update_every``-th optimizer step (every step during warm-up)."""
        if step_idx is None:
            return False
        if step_idx < self.warmup_steps:
            return True
        return (step_idx - self.warmup_steps) % self.update_every == 0

    def _lerp(self, averaged: Tensor, current: Tensor, num_averaged: Tensor) -> Tensor:
        if not averaged.is_floating_point():
            return current.clone()
        return torch.lerp(averaged, current.to(averaged.dtype), 1.0 - self._current_decay)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step_idx = trainer.global_step - 1
        if self._average_model is not None and trainer.global_step > self._latest_update_step:
            if step_idx < self.warmup_steps:
                self._average_model.n_averaged.zero_()  # AveragedModel copies when n == 0
            elif self.adaptive_decay and self.should_update(step_idx=step_idx):
                # n_averaged counts the copy that starts the average: n = averaging updates so far
                n = int(self._average_model.n_averaged) - 1
                self._current_decay = min(self.decay, (1.0 + n) / (10.0 + n))
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    # ------------------------------------------------------------------ access
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._module = pl_module

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The average was copied in ``setup``, before the strategy moved the module.
        if self._average_model is not None and self._device is None:
            self._average_model.to(pl_module.device)

    def averaged_module(self) -> L.LightningModule | None:
        """The module holding the EMA weights right now (``None`` before fit).

        Outside validation this is the averaged copy; while ``WeightAveraging`` has swapped the
        EMA weights into the trained module (validation), it is that module.
        """
        if self._average_model is None:
            return None
        if self._swapped and self._module is not None:
            return self._module
        return self._average_model.module

    def _swap_models(self, pl_module: L.LightningModule) -> None:
        super()._swap_models(pl_module)
        self._swapped = not self._swapped

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "current_decay": self._current_decay}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._current_decay = float(state_dict.get("current_decay", self.decay))
