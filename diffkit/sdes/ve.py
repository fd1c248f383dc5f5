"""Variance-exploding SDE [Song+21, 2011.13456; NCSN, 1907.05600; EDM, 2206.00364].

``dx = sqrt(d sigma^2(t) / dt) dW``: no drift, ``alpha_t = 1``, kernel
``N(x_0, (sigma(t)^2 - sigma(0)^2) I)`` (docs/background/sdes.md#ve). Two schedules:

* ``geometric`` (Song et al. / NCSN): ``sigma(t) = sigma_min (sigma_max / sigma_min)^t`` on
  ``[0, T = 1]``, ``g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min))``; CIFAR-10 defaults
  ``sigma_min = 0.01``, ``sigma_max = 50``, sampling ``eps = 1e-5``. ``exact_kernel=True``
  subtracts ``sigma(0)^2 = sigma_min^2`` (the true kernel of the SDE); ``False`` uses
  ``sigma(t)`` itself as the kernel std like score_sde (data treated as pre-blurred by
  ``sigma_min``).
* ``edm`` (Karras et al.): ``sigma(t) = t``, ``g = sqrt(2 t)``, time equals noise level, so
  ``T = sigma_max`` (default 80) and ``t_min = sigma_min`` (default 0.002).

Prior ``N(0, sigma_max^2 I)``. The noise level is the kernel std (``rho = sigma``, EDM's sigma),
with a closed-form inverse.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import ScalarSDE, as_time

__all__ = ["VESDE"]

_DEFAULTS = {"geometric": (0.01, 50.0), "edm": (0.002, 80.0)}


class VESDE(ScalarSDE):
    """Variance-exploding SDE.

    Args:
        schedule: ``geometric`` (Song et al., T = 1) or ``edm`` (``sigma(t) = t``, T = sigma_max).
        sigma_min: smallest noise level (default 0.01 geometric, 0.002 edm); ``> 0``.
        sigma_max: largest noise level, also the prior std (default 50 geometric, 80 edm);
            choose it at least the largest pairwise data distance [NCSNv2, 2006.09011].
        exact_kernel: geometric only; subtract ``sigma(0)^2`` from the kernel variance.
        t_min: default sampling truncation (default ``1e-5`` geometric, ``sigma_min`` edm).
    """

    def __init__(
        self,
        schedule: Literal["geometric", "edm"] = "geometric",
        sigma_min: float | None = None,
        sigma_max: float | None = None,
        exact_kernel: bool = True,
        t_min: float | None = None,
    ) -> None:
        super().__init__()
        if schedule not in _DEFAULTS:
            raise ValueError(f"VESDE.schedule must be 'geometric' or 'edm', got {schedule!r}")
        lo, hi = _DEFAULTS[schedule]
        sigma_min = lo if sigma_min is None else float(sigma_min)
        sigma_max = hi if sigma_max is None else float(sigma_max)
        if not sigma_min > 0:
            raise ValueError(f"VESDE.sigma_min must be > 0, got {sigma_min}")
        if not sigma_max > sigma_min:
            raise ValueError(f"VESDE.sigma_max must be > sigma_min = {sigma_min}, got {sigma_max}")
        self.schedule, self.exact_kernel = schedule, bool(exact_kernel)
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.prior_var = sigma_max**2
        if schedule == "geometric":
            self.T = 1.0
            t_min = 1e-5 if t_min is None else float(t_min)
            self._log_ratio = math.log(sigma_max / sigma_min)
        else:
            self.T = sigma_max
            t_min = sigma_min if t_min is None else float(t_min)
        if not 0 <= t_min < self.T:
            raise ValueError(f"VESDE.t_min must lie in [0, T = {self.T}), got {t_min}")
        self.t_min = t_min

    # ----------------------------------------------------------------- schedule, float64
    def sigma_schedule(self, t: Tensor | float) -> Tensor:
        """The schedule ``sigma(t)`` (the kernel std is :meth:`sigma`; they differ by
        ``sigma(0)`` when ``exact_kernel``)."""
        t = as_time(t)
        if self.schedule == "edm":
            return t
        return self.sigma_min * torch.exp(t * self._log_ratio)

    def log_alpha(self, t: Tensor | float) -> Tensor:
        """No drift: ``alpha = 1``."""
        return torch.zeros_like(as_time(t))

    def kernel_var(self, t: Tensor | float) -> Tensor:
        """Kernel variance ``sigma(t)^2 - sigma(0)^2`` (or ``sigma(t)^2``), ``(N,)``."""
        t = as_time(t)
        if self.schedule == "edm":
            return t**2
        if self.exact_kernel:  # sigma_min^2 (e^{2 t log r} - 1), accurate near t = 0
            return self.sigma_min**2 * torch.expm1(2.0 * t * self._log_ratio)
        return self.sigma_schedule(t) ** 2

    def drift_coef(self, t: Tensor | float) -> Tensor:
        return torch.zeros_like(as_time(t))

    def diffusion_sq(self, t: Tensor | float) -> Tensor:
        """``d sigma(t)^2 / dt``: ``2 t`` (edm), ``2 ln(sigma_max / sigma_min) sigma(t)^2``."""
        if self.schedule == "edm":
            return 2.0 * as_time(t)
        return self.sigma_schedule(t) ** 2 * (2.0 * self._log_ratio)

    # ----------------------------------------------------------------- noise levels
    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        if self.schedule == "edm":
            return rho.clone()
        if self.exact_kernel:
            return torch.log1p((rho / self.sigma_min) ** 2) / (2.0 * self._log_ratio)
        return torch.log(rho / self.sigma_min) / self._log_ratio

    def noise_condition(self, t: Tensor) -> Tensor:
        """EDM's ``c_noise = ln(sigma(t)) / 4`` (``sigma`` floored at 1e-20)."""
        return 0.25 * self.sigma_schedule(t).clamp_min(1e-20).log()
