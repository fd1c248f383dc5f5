"""Variance-preserving SDE [Song+21, 2011.13456; Ho+20, 2006.11239].

``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` in Song et al.'s convention, beta in
``[0.1, 20]`` (equal to Pierret-Galerne's ``dx = -beta x dt + sqrt(2 beta) dW`` with beta in
``[0.05, 10]``). Kernel ``x_t = alpha_t x_0 + sigma_t eps`` with ``alpha_t^2 + sigma_t^2 = 1``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import GaussianKernel, LinearSDE, as_time
from diffkit.sdes.operators import LinearOp

__all__ = ["VPSDE"]


class VPSDE(LinearSDE):
    """VP SDE with a linear beta schedule (Song et al.'s beta convention).

    Args:
        beta_min: beta(0), Song convention (``0.1`` for score_sde / DDPM).
        beta_max: beta(T), Song convention (``20``).
        schedule: ``linear`` (``beta(t) = beta_min + t (beta_max - beta_min)``).
        T: end time.
        t_min: default sampling truncation.
    """

    supports_v = True

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        schedule: Literal["linear"] = "linear",
        T: float = 1.0,
        t_min: float = 1e-3,
    ) -> None:
        super().__init__()
        if beta_min < 0:
            raise ValueError(f"VPSDE.beta_min must be >= 0, got {beta_min}")
        if not beta_max > beta_min:
            raise ValueError(
                f"VPSDE.beta_max must be > beta_min = {beta_min}, got {beta_max} "
                "(Song convention: beta in [0.1, 20])"
            )
        if T <= 0 or not 0 <= t_min < T:
            raise ValueError(f"VPSDE needs T > 0 and 0 <= t_min < T, got T={T}, t_min={t_min}")
        self.beta_min, self.beta_max, self.schedule = float(beta_min), float(beta_max), schedule
        self.T, self.t_min = float(T), float(t_min)

    # scalar schedule, float64 ------------------------------------------------------
    def beta(self, t: Tensor | float) -> Tensor:
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        t = as_time(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Tensor | float) -> Tensor:
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        return (-torch.expm1(2.0 * self.log_alpha(t))).sqrt()

    # operators ---------------------------------------------------------------------
    def drift_op(self, t: Tensor | float) -> LinearOp:
        return LinearOp.scalar(-0.5 * self.beta(t))

    def diffusion_op(self, t: Tensor | float) -> LinearOp:
        return LinearOp.scalar(self.beta(t).sqrt())

    def transition(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        return LinearOp.scalar((self.log_alpha(t) - self.log_alpha(s)).exp())

    def kernel(self, t: Tensor | float) -> GaussianKernel:
        sigma = self.sigma(t)
        return GaussianKernel(
            mean_op=LinearOp.scalar(self.alpha(t)),
            cov=LinearOp.scalar(sigma**2),
            scale=LinearOp.scalar(sigma),
        )

    def prior_cov(self) -> LinearOp:
        return LinearOp.scalar(1.0)

    # noise levels ------------------------------------------------------------------
    def noise_level(self, t: Tensor | float) -> Tensor:
        return torch.expm1(-2.0 * self.log_alpha(t)).sqrt()

    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        bd = self.beta_max - self.beta_min
        return ((self.beta_min**2 + 2 * bd * torch.log1p(rho**2)).sqrt() - self.beta_min) / bd
