"""Closed-form Gaussian score models for sampler tests (float64, any linear SDE).

Data ``N(0, C)`` with ``C`` a one-row :class:`LinearOp` in the SDE's basis has marginals
``N(0, C_t)``, ``C_t = A_t C A_t^T + Sigma_t`` and score ``-C_t^{-1} u``
(docs/background/sdes.md#exact-scores).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffkit.prediction import Prediction
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.exact import point_kernel
from diffkit.sdes.operators import LinearOp


class GaussianScore:
    """Exact score model of Gaussian data ``N(mean, cov)`` in state space.

    Marginals use the kernel from a point mass in the full state (``point_kernel``), so for CLD
    ``cov`` includes the initial velocity variance. The returned Prediction carries the SDE's
    training kernel (what eps is defined against).
    """

    def __init__(self, sde: LinearSDE, cov: LinearOp, mean: Tensor | None = None) -> None:
        self.sde, self.cov, self.mean = sde, cov, mean

    def marginal_cov(self, t: Tensor) -> LinearOp:
        k = point_kernel(self.sde, t)
        return k.mean_op @ self.cov @ k.mean_op.T + k.cov

    def marginal_mean(self, t: Tensor) -> Tensor | None:
        if self.mean is None:
            return None
        return point_kernel(self.sde, t).mean_op.apply(self.mean)

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        m = self.marginal_mean(t)
        score = -self.marginal_cov(t).solve(u if m is None else u - m.to(u.dtype))
        return Prediction(u, t, score, self.sde.kernel(t), "score")


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
