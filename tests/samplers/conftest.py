"""Fixtures of the sampler tests: the exact Gaussian score model (:class:`diffkit.gaussian.
GaussianScore`; docs/background/sdes.md#exact-scores) and an exact noise-row variance of
stochastic loops (float64, any linear SDE)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffkit.gaussian import GaussianScore
from diffkit.gaussian.propagation import noise_row_variance
from diffkit.sdes.base import LinearSDE


@pytest.fixture
def gaussian_score() -> type[GaussianScore]:
    return GaussianScore


@pytest.fixture
def exact_variance():
    """:func:`diffkit.gaussian.propagation.noise_row_variance` without the grid:
    ``(sampler, model, sde, start_var, draws) -> (variance, draws made)``."""

    def variance(sampler, model, sde: LinearSDE, start_var: Tensor, draws: int):
        var, made, _ = noise_row_variance(sampler, model, sde, start_var, draws)
        return var, made

    return variance


@pytest.fixture(autouse=True)
def _one_thread():
    """Sampler loops are many tiny tensor ops: intra-op threads only add spin-wait overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
