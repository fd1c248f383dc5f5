"""Variance-preserving SDE [Song+21, 2011.13456; Ho+20, 2006.11239; iDDPM, 2102.09672].

``dx = -1/2 beta(t) x dt + sqrt(beta(t)) dW`` in Song et al.'s convention, beta in
``[0.1, 20]``. This is the same process as Pierret-Galerne's ``dx = -beta x dt + sqrt(2 beta) dW``
with beta in ``[0.05, 10]`` (``beta^Song = 2 beta^PG``). Kernel ``x_t = alpha_t x_0 + sigma_t eps``
with ``alpha_t^2 + sigma_t^2 = 1`` and ``alpha_t = exp(-1/2 int_0^t beta)``
(docs/background/sdes.md#vp).

Schedules:

* ``linear``: ``beta(t) = beta_min + t (beta_max - beta_min)`` (score_sde, T = 1).
* ``cosine`` [iDDPM]: ``alpha_bar(t) = phi(t) / phi(0)``, ``phi(t) = cos^2((t + s)/(1 + s) pi/2)``,
  ``s = 0.008``; ``beta(t) = pi/(1 + s) tan((t + s)/(1 + s) pi/2)`` diverges at ``t = 1``, so
  ``T < 1`` is required (default ``T = 0.9946`` as in DPM-Solver, 2206.00927).
* ``ddpm`` [Ho+20]: the discrete chain ``beta_i = linspace(beta_min, beta_max, N) / N``
  (defaults ``1e-4 .. 0.02`` for N = 1000, i.e. ``beta_min = 0.1``, ``beta_max = 20`` in Song's
  units), ``alpha_bar_i = prod_{j <= i} (1 - beta_j)``. Index ``i`` (0-based) sits at
  ``t = (i + 1) / N`` and ``log alpha_bar`` is linear in ``t`` between nodes (``alpha_bar(0) = 1``),
  so the kernel at the nodes is exactly DDPM's and ``beta(t) = -N log(1 - beta_i)`` on
  ``((i)/N, (i+1)/N]``. The table is a float64 buffer. A network trained the DDPM way is
  conditioned on ``noise_condition(t) = N t - 1`` (its integer timestep at the nodes).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import ScalarSDE, as_time

__all__ = ["VPSDE"]

_COSINE_T = 0.9946


class VPSDE(ScalarSDE):
    """VP SDE (Song et al.'s beta convention).

    Args:
        beta_min: beta(0), Song convention (``0.1`` for score_sde; DDPM's ``1e-4 = 0.1 / N``).
        beta_max: beta(T), Song convention (``20``; DDPM's ``0.02 = 20 / N``).
        schedule: ``linear``, ``cosine`` (iDDPM) or ``ddpm`` (discrete, interpolated).
        cosine_s: offset ``s`` of the cosine schedule (0.008).
        num_steps: number of discrete DDPM steps ``N`` (``ddpm`` only; 1000).
        T: end time (default 1, or 0.9946 for ``cosine``, which needs ``T < 1``).
        t_min: default sampling truncation (1e-3).
    """

    supports_v = True

    def __init__(
        self,
        beta_min: float = 0.1,
        beta_max: float = 20.0,
        schedule: Literal["linear", "cosine", "ddpm"] = "linear",
        cosine_s: float = 0.008,
        num_steps: int = 1000,
        T: float | None = None,
        t_min: float = 1e-3,
    ) -> None:
        super().__init__()
        if schedule not in ("linear", "cosine", "ddpm"):
            raise ValueError(
                f"VPSDE.schedule must be 'linear', 'cosine' or 'ddpm', got {schedule!r}"
            )
        if beta_min < 0:
            raise ValueError(f"VPSDE.beta_min must be >= 0, got {beta_min}")
        if not beta_max > beta_min:
            raise ValueError(
                f"VPSDE.beta_max must be > beta_min = {beta_min}, got {beta_max} "
                "(Song convention: beta in [0.1, 20])"
            )
        if schedule == "cosine" and not cosine_s > 0:
            raise ValueError(f"VPSDE.cosine_s must be > 0, got {cosine_s}")
        if schedule == "ddpm" and num_steps < 1:
            raise ValueError(f"VPSDE.num_steps must be >= 1, got {num_steps}")
        if T is None:
            T = _COSINE_T if schedule == "cosine" else 1.0
        if schedule == "cosine" and not T < 1:
            raise ValueError(
                f"VPSDE.T must be < 1 for the cosine schedule (beta diverges at t = 1), got {T}; "
                f"use e.g. T = {_COSINE_T}"
            )
        if schedule == "ddpm" and T != 1.0:
            raise ValueError(f"VPSDE.T must be 1 for the ddpm schedule, got {T}")
        if T <= 0 or not 0 <= t_min < T:
            raise ValueError(f"VPSDE needs T > 0 and 0 <= t_min < T, got T={T}, t_min={t_min}")
        self.beta_min, self.beta_max, self.schedule = float(beta_min), float(beta_max), schedule
        self.cosine_s, self.num_steps = float(cosine_s), int(num_steps)
        self.T, self.t_min = float(T), float(t_min)
        table = torch.zeros(0, dtype=torch.float64)
        if schedule == "ddpm":
            n = self.num_steps
            betas = torch.linspace(beta_min / n, beta_max / n, n, dtype=torch.float64)
            if not bool((betas < 1).all()):
                raise ValueError(
                    f"VPSDE: discrete betas beta_max / num_steps = {beta_max / n} must be < 1"
                )
            table = torch.cat([torch.zeros(1, dtype=torch.float64), torch.log1p(-betas).cumsum(0)])
        # log alpha_bar at t = i / N, i = 0..N (ddpm only); float64, not in the state dict.
        self.register_buffer("log_alpha_bar_table", table, persistent=False)

    # scalar schedule, float64 ------------------------------------------------------
    def _phi_arg(self, t: Tensor) -> Tensor:
        return (t + self.cosine_s) / (1.0 + self.cosine_s) * (0.5 * math.pi)

    def _ddpm_index(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tab = self.log_alpha_bar_table.to(device=t.device, dtype=torch.float64)
        pos = t * self.num_steps
        idx = pos.floor().clamp(0, self.num_steps - 1).long()
        return tab, idx, pos - idx

    def beta(self, t: Tensor | float) -> Tensor:
        """``beta(t) = -d log alpha_bar / dt`` (Song convention), ``(N,)``."""
        t = as_time(t)
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        if self.schedule == "cosine":
            return math.pi / (1.0 + self.cosine_s) * torch.tan(self._phi_arg(t))
        tab, idx, _ = self._ddpm_index(t)
        return -(tab[idx + 1] - tab[idx]) * self.num_steps

    def log_alpha(self, t: Tensor | float) -> Tensor:
        t = as_time(t)
        if self.schedule == "linear":
            return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min
        if self.schedule == "cosine":
            return torch.log(torch.cos(self._phi_arg(t)) / math.cos(self._phi_arg0()))
        tab, idx, w = self._ddpm_index(t)
        return 0.5 * (tab[idx] * (1 - w) + tab[idx + 1] * w)

    def _phi_arg0(self) -> float:
        return self.cosine_s / (1.0 + self.cosine_s) * (0.5 * math.pi)

    def kernel_var(self, t: Tensor | float) -> Tensor:
        """``sigma^2 = 1 - alpha^2`` (variance preserving)."""
        return -torch.expm1(2.0 * self.log_alpha(t))

    def drift_coef(self, t: Tensor | float) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion_sq(self, t: Tensor | float) -> Tensor:
        return self.beta(t)

    # noise levels ------------------------------------------------------------------
    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        """Closed-form inverse of :meth:`noise_level` (docs/background/sdes.md#vp)."""
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        log_abar = -torch.log1p(rho**2)
        if self.schedule == "linear":
            bd = self.beta_max - self.beta_min
            return ((self.beta_min**2 + 2 * bd * torch.log1p(rho**2)).sqrt() - self.beta_min) / bd
        if self.schedule == "cosine":
            c = math.cos(self._phi_arg0())
            arg = torch.acos((0.5 * log_abar).exp() * c)
            return arg / (0.5 * math.pi) * (1.0 + self.cosine_s) - self.cosine_s
        # piecewise-linear log alpha_bar: invert on the containing interval
        tab = self.log_alpha_bar_table.to(device=rho.device, dtype=torch.float64)
        idx = torch.searchsorted(-tab, -log_abar, right=True) - 1
        idx = idx.clamp(0, self.num_steps - 1)
        w = (log_abar - tab[idx]) / (tab[idx + 1] - tab[idx])
        return (idx + w) / self.num_steps

    def noise_condition(self, t: Tensor) -> Tensor:
        """``t`` (linear, cosine); DDPM's continuous timestep index ``N t - 1`` (ddpm)."""
        if self.schedule == "ddpm":
            return self.num_steps * t - 1.0
        return t
