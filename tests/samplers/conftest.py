"""Closed-form Gaussian score models for sampler tests (float64, any linear SDE).

Data ``N(0, C)`` with ``C`` a one-row :class:`LinearOp` in the SDE's basis has marginals
``N(0, C_t)``, ``C_t = A_t C A_t^T + Sigma_t`` and score ``-C_t^{-1} u`` (sdes.md §8).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from diffkit.prediction import Prediction
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.operators import LinearOp


class GaussianScore:
    """Exact score model of centred Gaussian data with state covariance ``cov``."""

    def __init__(self, sde: LinearSDE, cov: LinearOp) -> None:
        self.sde, self.cov = sde, cov

    def marginal_cov(self, t: Tensor) -> LinearOp:
        k = self.sde.kernel(t)
        return k.mean_op @ self.cov @ k.mean_op.T + k.cov

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        k = self.sde.kernel(t)
        score = -self.marginal_cov(t).solve(u)
        return Prediction(u, t, score, k, "score")


@pytest.fixture
def gaussian_score() -> type[GaussianScore]:
    return GaussianScore


@pytest.fixture(autouse=True)
def _one_thread():
    """Sampler loops are many tiny tensor ops: intra-op threads only add spin-wait overhead."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
