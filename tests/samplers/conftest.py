"""Fixtures of the sampler tests: the exact Gaussian score model (:class:`diffkit.gaussian.
GaussianScore`; docs/background/sdes.md#exact-scores) and an exact noise-row variance of
stochastic loops (float64, any linear SDE)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffkit.gaussian import GaussianScore
from diffkit.sdes.base import LinearSDE


@pytest.fixture
def gaussian_score() -> type[GaussianScore]:
    return GaussianScore


def noise_row_variance(
    sampler, model, sde: LinearSDE, start_var: Tensor, draws: int
) -> tuple[Tensor, int]:
    """Exact per-coordinate output variance of a sampler loop that is linear in
    ``(u_T, z_1, ..., z_draws)``, through the real loop: batch row 0 carries ``sqrt(start_var)``
    and no noise, row k only the k-th noise draw (a unit vector, via ``noise_source``).
    Returns the sum of squared rows and the number of noise draws the loop made."""
    d = start_var.shape[0]
    u_T = torch.zeros(draws + 1, d, dtype=torch.float64)
    u_T[0] = start_var.sqrt()
    calls = [0]

    def source(u: Tensor) -> Tensor:
        calls[0] += 1
        z = torch.zeros_like(u)
        z[calls[0]] = 1.0
        return z

    sampler.noise_source = source
    out = sampler.sample(model, sde, (draws + 1, d), u_T=u_T, dtype=torch.float64).x
    return out.pow(2).sum(0), calls[0]


@pytest.fixture
def exact_variance():
    """:func:`noise_row_variance`."""
    return noise_row_variance


@pytest.fixture(autouse=True)
def _one_thread():
    """Sampler loops are many tiny tensor ops: intra-op threads only add spin-wait overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
