"""Training losses: each owns its time sampling and weighting and returns per-sample values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from diffkit.denoisers.parameterization import Parameterization
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

    def forward(
        self,
        model: Parameterization,
        sde: LinearSDE,
        x0: Tensor,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """``x0``: data ``(B, *S)``; draws t and noise from ``generator``."""
        raise NotImplementedError
