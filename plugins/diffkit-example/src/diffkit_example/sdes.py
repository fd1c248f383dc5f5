"""The sub-VP SDE [Song+21, 2011.13456, Sec. 3.4 and App. B; docs/background/sdes.md#subvp].

``dx = -1/2 beta(t) x dt + sqrt(beta(t) (1 - exp(-2 B(t)))) dW`` with ``B(t) = int_0^t beta``
and the linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)`` (Song's convention,
beta in ``[0.1, 20]``). Its kernel ``x_t = alpha_t x_0 + sigma_t eps`` has

* ``alpha_t = exp(-B/2)`` (as VP), and
* ``sigma_t = 1 - alpha_t^2 = 1 - exp(-B)``, a *standard deviation* (variance ``(1 - e^{-B})^2``),
  never larger than VP's ``sqrt(1 - e^{-B})``.

The prior is ``N(0, I)``. The noise level is ``rho = sigma/alpha = 2 sinh(B/2)``, inverted in
closed form. Every coefficient is float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffkit.sdes.base import ScalarSDE, as_time

__all__ = ["SubVPSDE"]


class SubVPSDE(ScalarSDE):
    """Sub-VP SDE with a linear beta schedule (Song et al.'s beta convention).

    It defines its schedule only; :class:`~diffkit.sdes.base.ScalarSDE` derives the operators,
    the kernel and the noise level.

    Args:
        beta_min: beta(0) (``0.1`` in score_sde).
        beta_max: beta(T) (``20``).
        T: end time.
        t_min: default sampling truncation.
    """

    def __init__(
        self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, t_min: float = 1e-3
    ) -> None:
        super().__init__()
        if beta_min < 0:
            raise ValueError(f"SubVPSDE.beta_min must be >= 0, got {beta_min}")
        if not beta_max > beta_min:
            raise ValueError(
                f"SubVPSDE.beta_max must be > beta_min = {beta_min}, got {beta_max} "
                "(Song convention: beta in [0.1, 20])"
            )
        if T <= 0 or not 0 <= t_min < T:
            raise ValueError(f"SubVPSDE needs T > 0 and 0 <= t_min < T, got T={T}, t_min={t_min}")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        self.T, self.t_min = float(T), float(t_min)

    # scalar schedule, float64 ------------------------------------------------------
    def beta(self, t: Tensor | float) -> Tensor:
        """``beta(t)``, ``(N,)`` float64."""
        t = as_time(t)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: Tensor | float) -> Tensor:
        """``B(t) = int_0^t beta``, ``(N,)`` float64."""
        t = as_time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def log_alpha(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.integrated_beta(t)

    def kernel_var(self, t: Tensor | float) -> Tensor:
        """``sigma^2 = (1 - exp(-B(t)))^2``."""
        return torch.expm1(-self.integrated_beta(t)) ** 2

    def drift_coef(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t: Tensor | float) -> Tensor:
        """``beta(t) (1 - exp(-2 B(t)))``."""
        return self.beta(t) * -torch.expm1(-2.0 * self.integrated_beta(t))

    # noise levels ------------------------------------------------------------------
    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        b = 2.0 * torch.asinh(0.5 * rho)
        bd = self.beta_max - self.beta_min
        return 2.0 * b / (self.beta_min + (self.beta_min**2 + 2.0 * bd * b).sqrt())
