"""Blurring diffusion [BDM, 2209.05557; IHDM, 2206.13397; gDDIM, 2206.05564].

Per channel, in the orthonormal 2-D DCT basis (:class:`~diffkit.sdes.operators.DCTBasis`), each
frequency ``(i, j)`` follows a scalar kernel with isotropic noise (docs/background/sdes.md#blur)::

    u_t = a_t u_0 + sigma_t eps,        a_t = alpha_t d_t,
    d_t = (1 - d_min) exp(-lambda tau_t) + d_min,     tau_t = sigma_B(t)^2 / 2,
    sigma_B(t) = sigma_b_max sin^2(pi t / 2),          lambda = pi^2 (i^2 / H^2 + j^2 / W^2).

As a linear SDE: ``f = d/dt log a_t`` and ``g^2 = d sigma_t^2/dt - 2 f sigma_t^2`` per frequency
(analytic derivatives), ``F = V diag(f) V^T``, ``G = V diag(g) V^T`` with ``V`` the inverse DCT.
Since ``Sigma_t = sigma_t^2 I``, gDDIM's ``R_t = sigma_t I``.

Schedules (``alpha_t^2 + sigma_t^2 = 1``):

* ``hoogeboom`` [BDM]: log-SNR ``l(t) = -2 log tan(a t + b)`` clipped to ``[l_min, l_max]``,
  ``alpha^2 = sigmoid(l)``, ``sigma^2 = sigmoid(-l)``;
* ``gddim`` (gDDIM reference code): ``alpha_bar = cos^2((t + 0.004)/1.008 pi/2)``, not normalised.

In both, ``a_0 < 1`` and ``sigma_0 > 0`` (as published): the kernel at ``t = 0`` is not a point
mass, like score_sde's VE kernel; the transition ``Psi(t, s) = a_t / a_s`` and Chapman-Kolmogorov
hold exactly. The noise level is the isotropic part's ``rho = sigma_t / alpha_t`` (``hoogeboom``)
or gDDIM's ``rho(t) = sqrt(alpha_bar_0 (1 - alpha_bar_t) / alpha_bar_t) - sqrt(1 - alpha_bar_0)``
(``gddim``, 0 at ``t = 0``); both have closed-form inverses.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import GaussianKernel, LinearSDE, as_time
from diffkit.sdes.operators import DCTBasis, LinearOp

__all__ = ["BlurSDE"]

_GDDIM_SHIFT = 0.004


class BlurSDE(LinearSDE):
    """Blurring diffusion on images ``(B, C, H, W)``, operators diagonal in the DCT basis.

    Args:
        image_size: ``(H, W)`` of the data (any size; blur strength depends on it through
            lambda); an int means square images.
        sigma_b_max: maximal Gaussian-blur std ``sigma_B(T)`` in pixels (20 in common ports of
            BDM; gDDIM uses 10).
        d_min: floor of the per-frequency dissipation ``d_t`` (BDM: 0.001).
        schedule: ``hoogeboom`` (cosine log-SNR) or ``gddim`` (shifted cosine alpha-bar).
        logsnr_min: ``l_min`` of the ``hoogeboom`` schedule (-10).
        logsnr_max: ``l_max`` of the ``hoogeboom`` schedule (10).
        T: end time (1).
        t_min: default sampling truncation.
    """

    def __init__(
        self,
        image_size: tuple[int, int] | int = (32, 32),
        sigma_b_max: float = 20.0,
        d_min: float = 0.001,
        schedule: Literal["hoogeboom", "gddim"] = "hoogeboom",
        logsnr_min: float = -10.0,
        logsnr_max: float = 10.0,
        T: float = 1.0,
        t_min: float = 1e-3,
    ) -> None:
        super().__init__()
        size = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or not all(isinstance(v, int) and v >= 1 for v in size):
            raise ValueError(f"BlurSDE.image_size must be (H, W) with H, W >= 1, got {image_size}")
        if not sigma_b_max >= 0:
            raise ValueError(f"BlurSDE.sigma_b_max must be >= 0, got {sigma_b_max}")
        if not 0 <= d_min < 1:
            raise ValueError(f"BlurSDE.d_min must lie in [0, 1), got {d_min}")
        if schedule not in ("hoogeboom", "gddim"):
            raise ValueError(f"BlurSDE.schedule must be 'hoogeboom' or 'gddim', got {schedule!r}")
        if not logsnr_max > logsnr_min:
            raise ValueError(
                f"BlurSDE.logsnr_max must be > logsnr_min = {logsnr_min}, got {logsnr_max}"
            )
        if not 0 < T <= 1:
            raise ValueError(f"BlurSDE.T must lie in (0, 1] (the schedules end at 1), got {T}")
        if not 0 <= t_min < T:
            raise ValueError(f"BlurSDE.t_min must lie in [0, T = {T}), got {t_min}")
        self.image_size = (int(size[0]), int(size[1]))
        self.sigma_b_max, self.d_min, self.schedule = float(sigma_b_max), float(d_min), schedule
        self.logsnr_min, self.logsnr_max = float(logsnr_min), float(logsnr_max)
        self.T, self.t_min = float(T), float(t_min)
        self.basis = DCTBasis(*size)
        self._b = math.atan(math.exp(-0.5 * self.logsnr_max))
        self._a = math.atan(math.exp(-0.5 * self.logsnr_min)) - self._b
        h, w = size
        i = torch.arange(h, dtype=torch.float64)[:, None]
        j = torch.arange(w, dtype=torch.float64)[None, :]
        self.register_buffer(
            "frequencies", math.pi**2 * (i**2 / h**2 + j**2 / w**2), persistent=False
        )

    # ----------------------------------------------------------------- shapes
    def check_data_shape(self, data_shape: tuple[int, ...]) -> None:
        if len(data_shape) != 3 or tuple(data_shape[-2:]) != self.image_size:
            raise ValueError(
                f"BlurSDE.image_size = {self.image_size} does not match data of shape "
                f"{tuple(data_shape)}; blurring needs images (C, H, W) with (H, W) = image_size: "
                f"set image_size: [{', '.join(str(s) for s in data_shape[-2:])}]"
            )

    # ----------------------------------------------------------------- isotropic schedule
    def log_alpha_sigma(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(log alpha, sigma^2, d log alpha / dt, d sigma^2 / dt)``, each ``(N,)``."""
        t = as_time(t)
        if self.schedule == "hoogeboom":
            arg = self._a * t + self._b
            ell = -2.0 * torch.log(torch.tan(arg))
            dell = -4.0 * self._a / torch.sin(2.0 * arg)
            log_alpha = -0.5 * torch.nn.functional.softplus(-ell)
            sig2 = torch.sigmoid(-ell)
            alpha2 = torch.sigmoid(ell)
            return log_alpha, sig2, 0.5 * sig2 * dell, -alpha2 * sig2 * dell
        c = 0.5 * math.pi / (1.0 + 2 * _GDDIM_SHIFT)
        arg = (t + _GDDIM_SHIFT) * c
        log_alpha = torch.log(torch.cos(arg))
        sig2 = torch.sin(arg) ** 2
        return log_alpha, sig2, -c * torch.tan(arg), 2.0 * c * torch.sin(arg) * torch.cos(arg)

    def alpha(self, t: Tensor | float) -> Tensor:
        return self.log_alpha_sigma(t)[0].exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        return self.log_alpha_sigma(t)[1].sqrt()

    def sigma_blur(self, t: Tensor | float) -> Tensor:
        """``sigma_B(t) = sigma_b_max sin^2(pi t / 2)``, ``(N,)``."""
        return self.sigma_b_max * torch.sin(0.5 * math.pi * as_time(t)) ** 2

    def dissipation(self, t: Tensor | float) -> Tensor:
        """``d_t`` per frequency, ``(N, H, W)``."""
        tau = 0.5 * self.sigma_blur(t) ** 2
        lam = self.frequencies.to(device=tau.device, dtype=torch.float64)
        return (1.0 - self.d_min) * torch.exp(-lam * tau[:, None, None]) + self.d_min

    def _log_a(self, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """``log a_t`` and ``d/dt log a_t`` per frequency, ``(N, H, W)``."""
        t = as_time(t)
        log_alpha, _, dlog_alpha, _ = self.log_alpha_sigma(t)
        sb = self.sigma_blur(t)
        tau = 0.5 * sb**2
        dtau = sb * self.sigma_b_max * 0.5 * math.pi * torch.sin(math.pi * t)
        lam = self.frequencies.to(device=t.device, dtype=torch.float64)
        decay = (1.0 - self.d_min) * torch.exp(-lam * tau[:, None, None])
        d = decay + self.d_min
        dlog_d = -lam * dtau[:, None, None] * decay / d
        return log_alpha[:, None, None] + d.log(), dlog_alpha[:, None, None] + dlog_d

    # ----------------------------------------------------------------- operators
    def _diag(self, c: Tensor) -> LinearOp:
        return LinearOp.diagonal(c, basis=self.basis)

    def drift_op(self, t: Tensor | float) -> LinearOp:
        return self._diag(self._log_a(t)[1])

    def diffusion_op(self, t: Tensor | float) -> LinearOp:
        _, sig2, _, dsig2 = self.log_alpha_sigma(t)
        f = self._log_a(t)[1]
        g2 = dsig2[:, None, None] - 2.0 * f * sig2[:, None, None]
        return self._diag(g2.clamp_min(0.0).sqrt())

    def transition(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        return self._diag((self._log_a(t)[0] - self._log_a(s)[0]).exp())

    def kernel(self, t: Tensor | float) -> GaussianKernel:
        self.check_time(t)
        sig2 = self.log_alpha_sigma(t)[1]
        return GaussianKernel(
            mean_op=self._diag(self._log_a(t)[0].exp()),
            cov=LinearOp.scalar(sig2),
            scale=LinearOp.scalar(sig2.sqrt()),
        )

    def kernel_factor_R(self, t: Tensor | float) -> LinearOp:
        """gDDIM's ``R_t = sigma_t I``."""
        return LinearOp.scalar(self.sigma(t))

    def prior_cov(self) -> LinearOp:
        return LinearOp.scalar(self.log_alpha_sigma(self.T)[1])

    # ----------------------------------------------------------------- noise levels
    def _alpha_bar0(self) -> float:
        return math.cos(0.5 * math.pi * _GDDIM_SHIFT / (1.0 + 2 * _GDDIM_SHIFT)) ** 2

    def noise_level(self, t: Tensor | float) -> Tensor:
        log_alpha, sig2, _, _ = self.log_alpha_sigma(t)
        if self.schedule == "hoogeboom":
            return sig2.sqrt() / log_alpha.exp()
        # sqrt(ab0 sig2 / abar) - sqrt(1 - ab0) = (ab0 - abar) / abar / (sum of the roots),
        # with ab0 - abar = sin(arg - arg0) sin(arg + arg0): no cancellation near t = 0.
        ab0 = self._alpha_bar0()
        abar = (2.0 * log_alpha).exp()
        c = 0.5 * math.pi / (1.0 + 2 * _GDDIM_SHIFT)
        arg, arg0 = (as_time(t) + _GDDIM_SHIFT) * c, _GDDIM_SHIFT * c
        diff = torch.sin(arg - arg0) * torch.sin(arg + arg0)
        return diff / abar / ((ab0 * sig2 / abar).sqrt() + math.sqrt(1.0 - ab0))

    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        if self.schedule == "hoogeboom":
            return (torch.atan(rho) - self._b) / self._a
        ab0 = self._alpha_bar0()
        abar = ab0 / (ab0 + (rho + math.sqrt(1.0 - ab0)) ** 2)
        c = 0.5 * math.pi / (1.0 + 2 * _GDDIM_SHIFT)
        return torch.acos(abar.sqrt()) / c - _GDDIM_SHIFT
