"""The linear-SDE interface shared by every forward process.

``du = F(t) u dt + G(t) dW`` on ``[0, T]``, time 0 = data and T = noise, with the closed-form
Gaussian kernel ``u_t | u_0 ~ N(Psi(t, 0) u_0, Sigma_t)`` [Song+21, 2011.13456; gDDIM,
2206.05564]. Samplers, losses and metrics touch an SDE only through this interface and the
:class:`~diffkit.sdes.operators.LinearOp` values it returns, so each works on every SDE.

Shapes: data ``x`` is ``(B, *S)``; the state ``u`` is ``(B, *state_shape(S))``
(CLD: ``(B, 2, *S)``);
time ``t`` is ``(B,)`` (or a 0-d tensor / float, broadcast). Every coefficient is computed in
float64 whatever the model's dtype, and tables are non-persistent float64 buffers.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from diffkit.sdes.operators import LinearOp

__all__ = ["GaussianKernel", "LinearSDE", "ScalarSDE", "as_time"]


def as_time(t: Tensor | float, *, device: torch.device | None = None) -> Tensor:
    """Times as a float64 tensor of shape ``(N,)``."""
    t = torch.as_tensor(t, dtype=torch.float64, device=device)
    return t.reshape(-1).to(torch.float64)


@dataclass(frozen=True)
class GaussianKernel:
    """``u_t | u_0 ~ N(mean_op u_0, cov)`` with a square root ``scale @ scale.T = cov``.

    ``scale`` is the factor a network's eps is defined against (Cholesky by default).
    """

    mean_op: LinearOp  # Psi(t, 0)
    cov: LinearOp  # Sigma_t
    scale: LinearOp  # K_t with K K^T = Sigma_t

    @property
    def is_scalar(self) -> bool:
        """Whether ``u_t = alpha u_0 + sigma eps`` with scalar ``alpha``, ``sigma`` per time."""
        return self.mean_op.is_scalar and self.scale.is_scalar

    def alpha_sigma(self) -> tuple[Tensor, Tensor]:
        """``(alpha, sigma)``, each ``(N,)`` float64, of a scalar kernel (see :attr:`is_scalar`)."""
        return self.mean_op.coef[:, 0, 0], self.scale.coef[:, 0, 0]


class LinearSDE(nn.Module, abc.ABC):
    """Base class of forward SDEs. Subclasses implement the abstract methods in closed form.

    Attributes:
        T: end time (noise).
        t_min: default truncation time for sampling (training and likelihood may use less).
        block: 1 for SDEs on the data itself, 2 for CLD's (position, velocity) state.
        supports_v: whether the v-prediction target is defined (variance-preserving kernels).
    """

    T: float = 1.0
    t_min: float = 1e-3
    block: int = 1
    supports_v: bool = False
    #: Variance of the initial velocity ``v_0 ~ N(0, velocity_variance I)`` of a block-2 state
    #: (CLD's ``gamma M``); 0 for SDEs on the data itself.
    velocity_variance: float = 0.0

    # ----------------------------------------------------------------- shapes
    def state_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one state for one datum of shape ``data_shape``."""
        return tuple(data_shape) if self.block == 1 else (2, *data_shape)

    def check_data_shape(self, data_shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` naming the field when this SDE cannot act on such data."""

    def lift(self, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Data ``(B, *S)`` to an initial state ``(B, *state_shape)`` (CLD draws ``v_0``)."""
        return x0

    def project(self, u: Tensor) -> Tensor:
        """State to data (CLD drops the velocity)."""
        return u

    # ----------------------------------------------------------------- operators
    @abc.abstractmethod
    def drift_op(self, t: Tensor | float) -> LinearOp:
        """``F(t)``, one row per time."""

    @abc.abstractmethod
    def diffusion_op(self, t: Tensor | float) -> LinearOp:
        """``G(t)``, one row per time."""

    @abc.abstractmethod
    def transition(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        """``Psi(t, s)``: the mean map from time ``s`` to time ``t`` (either order)."""

    @abc.abstractmethod
    def kernel(self, t: Tensor | float) -> GaussianKernel:
        """The training kernel ``u_t | u_0`` (for CLD with HSM, conditioned on ``x_0`` only)."""

    def point_kernel(self, t: Tensor | float) -> GaussianKernel:
        """The kernel ``u_t | u_0`` from a point mass in the full state.

        Equal to :meth:`kernel` unless the training kernel is conditioned on part of the state
        only (CLD's hybrid score matching conditions on ``x_0`` and marginalises ``v_0``).
        """
        return self.kernel(t)

    def kernel_factor_R(self, t: Tensor | float) -> LinearOp:
        """gDDIM's factor ``R_t`` with ``dR/dt = F R + 1/2 G G^T R^{-T}``, ``R R^T = Sigma_t``
        [gDDIM, 2206.05564]; see :mod:`diffkit.samplers.factors`.

        For 1x1 blocks (scalar and per-frequency SDEs) ``R_t = Sigma_t^{1/2}``; a 2x2-block SDE
        must override this (CLD does).
        """
        if self.block == 1:
            return self.kernel(t).cov.cholesky()
        raise ValueError(
            f"gDDIM's R_t factor is undefined for {type(self).__name__}: a 2x2-block SDE must "
            "provide kernel_factor_R(t); use factor='kernel' (Cholesky) or another sampler"
        )

    @classmethod
    def defines_kernel_factor_R(cls) -> bool:
        """Whether :meth:`kernel_factor_R` is defined for this SDE."""
        return cls.block == 1 or cls.kernel_factor_R is not LinearSDE.kernel_factor_R

    def conditional_cov(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        """``Sigma_{t|s}`` for ``s <= t``, by Chapman-Kolmogorov from the kernel at ``0``."""
        psi = self.transition(t, s)
        return self.kernel(t).cov - psi @ self.kernel(s).cov @ psi.T

    # ----------------------------------------------------------------- sampling helpers
    def perturb(
        self, u0: Tensor, t: Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Draw ``u_t = Psi(t,0) u0 + K_t eps``. ``u0``: ``(B, *state)``; ``t``: ``(B,)``."""
        eps = torch.randn(u0.shape, generator=generator, device=u0.device, dtype=u0.dtype)
        k = self.kernel(t)
        return k.mean_op.apply(u0) + k.scale.apply(eps), eps

    @abc.abstractmethod
    def prior_cov(self) -> LinearOp:
        """Covariance of the prior ``pi ~ p_T`` (zero mean), a single-row operator."""

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """``shape`` is ``(B, *state_shape)``."""
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype or torch.float32)
        return self.prior_cov().cholesky().apply(z)

    def prior_logp(self, u: Tensor) -> Tensor:
        """Log-density of the prior at ``u``, ``(B,)``."""
        cov = self.prior_cov()
        white = cov.cholesky().solve(u.to(torch.float64))
        d = white[0].numel()
        data_shape = tuple(u.shape[1:]) if self.block == 1 else tuple(u.shape[2:])
        logdet = cov.logdet(data_shape)
        quad = white.reshape(u.shape[0], -1).pow(2).sum(-1)
        return -0.5 * (quad + logdet + d * math.log(2 * math.pi))

    def reverse_drift(self, u: Tensor, t: Tensor, score: Tensor, *, lam: float = 1.0) -> Tensor:
        """Drift of the reverse family ``F u - (1 + lam^2)/2 G G^T score`` (lam = 0: PF-ODE)."""
        g = self.diffusion_op(t)
        return self.drift_op(t).apply(u) - 0.5 * (1.0 + lam**2) * (g @ g.T).apply(score)

    # ----------------------------------------------------------------- noise levels
    @abc.abstractmethod
    def noise_level(self, t: Tensor | float) -> Tensor:
        """A scalar, strictly increasing noise level ``rho(t)`` per time, ``(N,)`` float64.

        For scalar SDEs ``rho = sigma_t / alpha_t`` (EDM's sigma, DEIS's rho); grids in
        log-SNR and EDM's rho-spacing are defined through it.
        """

    def t_from_noise_level(self, rho: Tensor) -> Tensor:
        """Inverse of :meth:`noise_level` (bisection in float64; subclasses may override)."""
        rho = torch.as_tensor(rho, dtype=torch.float64).reshape(-1)
        lo = torch.zeros_like(rho)
        hi = torch.full_like(rho, float(self.T))
        for _ in range(100):
            mid = 0.5 * (lo + hi)
            above = self.noise_level(mid) > rho
            hi = torch.where(above, mid, hi)
            lo = torch.where(above, lo, mid)
        return 0.5 * (lo + hi)

    def log_snr(self, t: Tensor | float) -> Tensor:
        """``-2 log rho(t)``, ``(N,)`` float64."""
        return -2.0 * self.noise_level(t).log()

    def noise_condition(self, t: Tensor) -> Tensor:
        """What a network is conditioned on (``c_noise``), ``(B,)``; default: ``t`` itself."""
        return t

    def check_time(self, t: Tensor | float, name: str = "t") -> None:
        """Raise ``ValueError`` when any time lies outside ``[0, T]``."""
        tt = as_time(t)
        # One fused comparison and a single host sync: this runs at every kernel evaluation.
        if bool(((tt < 0) | (tt > self.T * (1 + 1e-12))).any()):
            raise ValueError(
                f"{name} must lie in [0, T] = [0, {self.T}] for {type(self).__name__}; got values "
                f"in [{tt.min().item():.4g}, {tt.max().item():.4g}]"
            )

    # ----------------------------------------------------------------- dtype policy
    def _apply(self, fn, recurse: bool = True):  # keep float64 tables float64 under .to(dtype)
        # Remember the original float64 buffers: converting to float32 and back would round them.
        keep = {
            name: b
            for name, b in self.named_buffers(recurse=False)
            if b is not None and b.dtype == torch.float64
        }
        out = super()._apply(fn, recurse)
        for name, old in keep.items():
            new = getattr(self, name)
            if new is not None and new.dtype != torch.float64:
                setattr(self, name, old.to(device=new.device))
        return out


class ScalarSDE(LinearSDE):
    """An SDE whose kernel is ``u_t = alpha(t) u_0 + sigma(t) eps`` with scalar coefficients.

    ``du = f(t) u dt + g(t) dW`` with ``f = d log alpha / dt`` and
    ``g^2 = d sigma^2 / dt - 2 f sigma^2`` [Song+21, 2011.13456; docs/background/sdes.md#scalar].
    A subclass defines the schedule only -- :meth:`log_alpha`, :meth:`kernel_var`,
    :meth:`drift_coef`, :meth:`diffusion_sq` and ``prior_var`` -- and this base derives the
    operators, the kernel and the noise level ``rho = sigma / alpha``. Every value is
    ``(N,)`` float64 for ``N`` times.
    """

    #: Variance of the prior ``N(0, prior_var I)``.
    prior_var: float = 1.0

    @abc.abstractmethod
    def log_alpha(self, t: Tensor | float) -> Tensor:
        """``log alpha(t)``, the log of the kernel's mean coefficient."""

    @abc.abstractmethod
    def kernel_var(self, t: Tensor | float) -> Tensor:
        """``sigma(t)^2``, the kernel variance."""

    @abc.abstractmethod
    def drift_coef(self, t: Tensor | float) -> Tensor:
        """``f(t) = d log alpha / dt``."""

    @abc.abstractmethod
    def diffusion_sq(self, t: Tensor | float) -> Tensor:
        """``g(t)^2 = d sigma^2 / dt - 2 f sigma^2``."""

    def alpha(self, t: Tensor | float) -> Tensor:
        """``alpha(t)``."""
        return self.log_alpha(t).exp()

    def sigma(self, t: Tensor | float) -> Tensor:
        """``sigma(t)``, the kernel standard deviation."""
        return self.kernel_var(t).sqrt()

    def drift_op(self, t: Tensor | float) -> LinearOp:
        return LinearOp.scalar(self.drift_coef(t))

    def diffusion_op(self, t: Tensor | float) -> LinearOp:
        return LinearOp.scalar(self.diffusion_sq(t).sqrt())

    def transition(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        """``Psi(t, s) = alpha(t) / alpha(s)``."""
        return LinearOp.scalar((self.log_alpha(t) - self.log_alpha(s)).exp())

    def kernel(self, t: Tensor | float) -> GaussianKernel:
        self.check_time(t)
        var = self.kernel_var(t)
        return GaussianKernel(
            mean_op=LinearOp.scalar(self.log_alpha(t).exp()),
            cov=LinearOp.scalar(var),
            scale=LinearOp.scalar(var.sqrt()),
        )

    def prior_cov(self) -> LinearOp:
        return LinearOp.scalar(self.prior_var)

    def noise_level(self, t: Tensor | float) -> Tensor:
        """``rho = sigma / alpha`` (EDM's sigma, DEIS's rho)."""
        return self.kernel_var(t).sqrt() * (-self.log_alpha(t)).exp()
