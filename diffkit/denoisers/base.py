"""Denoiser networks and the shape contract they receive from the module.

A denoiser is a raw network ``net(u, c_noise, cond) -> out``: ``u`` is ``(B, *state_shape)``,
``c_noise`` is ``(B,)`` (what the SDE's :meth:`~diffkit.sdes.base.LinearSDE.noise_condition`
returns), ``cond`` is ``(B,)`` class labels or ``None``; ``out`` is ``(B, *output_shape)``.
It never sees time scalings: :class:`~diffkit.denoisers.parameterization.Parameterization`
turns it into a score model.

Denoisers are injected as *factories* ``Callable[[DenoiserSpec], Denoiser]`` (LightningCLI's
``OptimizerCallable`` pattern): the module knows the data and the SDE and supplies the spec, so
a config names only what the user chooses (width, depth, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["Denoiser", "DenoiserSpec"]


@dataclass(frozen=True)
class DenoiserSpec:
    """Shapes a denoiser is built for.

    Attributes:
        data_shape: one datum, e.g. ``(2,)`` or ``(3, 32, 32)``.
        state_shape: one SDE state (CLD: ``(2, *data_shape)``).
        output_shape: one output (the loss's target; HSM: ``data_shape``, the velocity half).
        num_classes: number of classes for conditioning, or ``None``.
    """

    data_shape: tuple[int, ...]
    state_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    num_classes: int | None = None


class Denoiser(nn.Module):
    """Base class of denoiser networks; subclasses take ``spec`` as first positional argument."""

    def __init__(self, spec: DenoiserSpec, /) -> None:
        super().__init__()
        self.spec = spec

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        raise NotImplementedError
