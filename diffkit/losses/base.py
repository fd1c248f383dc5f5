"""Training losses: each owns its time sampling and weighting and returns per-sample values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from diffkit.losses.time_sampling import sample_time

if TYPE_CHECKING:
    from diffkit.prediction import ScoreModel
    from diffkit.sdes.base import LinearSDE

__all__ = ["Loss", "LossOutput"]


@dataclass
class LossOutput:
    """``loss``: per-sample weighted loss ``(B,)``; ``t``: the times drawn ``(B,)``;
    ``logs``: extra per-sample or scalar tensors to log."""

    loss: Tensor
    t: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Loss(nn.Module):
    """Base class of losses. The module reduces ``LossOutput.loss`` (mean over the batch).

    Attributes:
        target: the network output parameterisation this loss trains (``eps`` | ``x0`` | ...).
        output_kind: ``"state"`` when the network outputs a full state, ``"velocity"`` when it
            outputs only the velocity half (CLD hybrid score matching).
    """

    target: str = "eps"
    output_kind: str = "state"

    def check_sde(self, sde: LinearSDE) -> None:
        """Raise ``ValueError`` at construction when this loss is undefined for ``sde``."""

    def __init__(self) -> None:
        super().__init__()
        self._checked_sdes: set[int] = set()

    def check_once(self, sde: LinearSDE) -> None:
        """:meth:`check_sde`, once per SDE object (losses call it on every batch)."""
        if id(sde) not in self._checked_sdes:
            self.check_sde(sde)
            self._checked_sdes.add(id(sde))

    def sample_time(
        self,
        sde: LinearSDE,
        batch: int,
        generator: torch.Generator | None,
        device: torch.device,
        t: Tensor | None = None,
    ) -> Tensor:
        """The training times of one batch, float64 ``(batch,)``: ``t`` when given (broadcast),
        else drawn by the loss's ``time_sampling`` law (attributes ``time_sampling``, ``t_min``,
        ``p_mean``, ``p_std``)."""
        if t is not None:
            return t.to(device=device, dtype=torch.float64).reshape(-1).expand(batch)
        return sample_time(
            self.time_sampling,
            sde,
            batch,
            t_min=self.t_min,
            generator=generator,
            device=device,
            p_mean=self.p_mean,
            p_std=self.p_std,
        )

    def forward(
        self,
        model: ScoreModel,
        sde: LinearSDE,
        x0: Tensor,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """``x0``: data ``(B, *S)``; draws t and noise from ``generator``."""
        raise NotImplementedError
