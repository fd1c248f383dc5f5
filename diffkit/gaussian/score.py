"""The exact score and denoiser of Gaussian data ``N(mean, C)`` under any linear SDE.

With the kernel from a point mass in the full state, ``u_t | u_0 ~ N(A_t u_0, S_t)``, the
marginal is ``N(A_t mean, C_t)`` with ``C_t = A_t C A_t^T + S_t``, so [Song+21, 2011.13456;
CLD, 2112.07068]::

    grad log p_t(u) = -C_t^{-1} (u - A_t mean)
    E[u_0 | u_t = u] = mean + C A_t^T C_t^{-1} (u - A_t mean)

``C`` is a one-row :class:`~diffkit.sdes.operators.LinearOp` in the SDE's basis (state space: for
CLD it includes the initial velocity variance, see :func:`data_cov`). Everything is float64 and
differentiable in ``t`` (the grid optimiser differentiates through it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit.prediction import Prediction, Target
from diffkit.sdes.base import LinearSDE, as_time
from diffkit.sdes.exact import GaussianMixture, point_kernel
from diffkit.sdes.operators import LinearOp

__all__ = ["ExactScoreModel", "GaussianScore", "data_cov"]


def data_cov(sde: LinearSDE, lam: Tensor) -> LinearOp:
    """State covariance ``(1 row)`` of data ``N(0, diag lam)`` in the SDE's basis.

    ``lam`` has the data shape the SDE's operators broadcast against (any shape for scalar SDEs,
    ``(C, H, W)`` DCT-frequency variances for blurring). CLD lifts it to ``diag(lam,
    velocity_variance)`` per eigendirection.
    """
    lam = torch.as_tensor(lam, dtype=torch.float64)
    basis = sde.transition(torch.ones(1), torch.zeros(1)).basis
    if sde.block == 2:
        z = torch.zeros_like(lam)
        v = z + sde.velocity_variance
        c = torch.stack([torch.stack([lam, z], -1), torch.stack([z, v], -1)], -2)
        return LinearOp(c[None], basis)
    return LinearOp.diagonal(lam[None], basis=basis)


class GaussianScore:
    """Score model ``(u_t, t) -> Prediction`` of Gaussian data ``N(mean, cov)`` in state space.

    The returned :class:`~diffkit.prediction.Prediction` carries the SDE's training kernel (what
    eps is defined against), so ``pred.eps()`` / ``pred.x0()`` are the exact ones.

    Args:
        sde: the forward SDE.
        cov: one-row state covariance (see :func:`data_cov`).
        mean: state mean ``(*state)`` (default 0).
    """

    def __init__(self, sde: LinearSDE, cov: LinearOp, mean: Tensor | None = None) -> None:
        self.sde, self.cov, self.mean = sde, cov, mean

    def marginal_cov(self, t: Tensor) -> LinearOp:
        """``C_t = A_t C A_t^T + S_t``, one row per time."""
        k = point_kernel(self.sde, t)
        return k.mean_op @ self.cov @ k.mean_op.T + k.cov

    def marginal_mean(self, t: Tensor) -> Tensor | None:
        """``A_t mean`` ``(B, *state)`` or ``None`` for centred data."""
        if self.mean is None:
            return None
        return point_kernel(self.sde, t).mean_op.apply(self.mean)

    def score(self, u: Tensor, t: Tensor) -> Tensor:
        """``grad log p_t(u)``, ``(B, *state)``."""
        m = self.marginal_mean(t)
        return -self.marginal_cov(t).solve(u if m is None else u - m.to(u.dtype))

    def denoise(self, u: Tensor, t: Tensor) -> Tensor:
        """``E[u_0 | u_t = u]`` in state space, ``(B, *state)``."""
        a = point_kernel(self.sde, t).mean_op
        m = self.marginal_mean(t)
        white = self.marginal_cov(t).solve(u if m is None else u - m.to(u.dtype))
        out = (self.cov @ a.T).apply(white)
        return out if self.mean is None else out + self.mean.to(out.dtype)

    def __call__(self, u: Tensor, t: Tensor) -> Prediction:
        return Prediction(u, t, self.score(u, t), self.sde.kernel(t), "score")


class ExactScoreModel:
    """A score model ``(u_t, t) -> Prediction`` with the exact score of ``dist`` under ``sde``.

    Samplers, losses and metrics use it exactly like a trained network. The raw output is the
    exact score (``target="score"``) or the denoiser consistent with the SDE's training kernel
    (``target="x0"``: ``A_t^{-1}(u + Sigma_t score)``, which is ``E[u_0 | u_t]`` for kernels
    conditioned on the full initial state; for CLD's hybrid kernel it is ``(E[x_0|u_t], 0)``),
    or the matching noise (``target="eps"``, ``-K_t^T score``). Computed in float64 and cast to
    ``u_t``'s dtype.

    Args:
        dist: the data law.
        sde: the forward SDE.
        target: the parameterisation of ``raw``.
    """

    def __init__(self, dist: GaussianMixture, sde: LinearSDE, target: Target = "score") -> None:
        if target not in ("score", "x0", "eps"):
            raise ValueError(
                f"ExactScoreModel.target must be 'score', 'x0' or 'eps', got {target!r}"
            )
        dist_shape = dist.data_shape
        sde.check_data_shape(dist_shape)
        self.dist, self.sde, self.target = dist, sde, target

    def __call__(self, u_t: Tensor, t: Tensor) -> Prediction:
        b = u_t.shape[0]
        t = as_time(t, device=u_t.device)
        if t.numel() == 1:
            t = t.expand(b)
        score = self.dist.score(u_t, t, self.sde)
        kern = self.sde.kernel(t)
        if self.target == "score":
            raw = score
        elif self.target == "eps":
            raw = -kern.scale.T.apply(score)
        else:
            raw = kern.mean_op.solve(u_t.to(torch.float64) + kern.cov.apply(score))
        return Prediction(u_t=u_t, t=t, raw=raw.to(u_t.dtype), kernel=kern, target=self.target)
