"""Critically-damped Langevin diffusion (CLD) [CLD, 2112.07068; gDDIM, 2206.05564].

The state is ``u = (x, v)``, stored as ``(B, 2, *S)``::

    dx = M^{-1} v beta(t) dt,    dv = (-x - Gamma M^{-1} v) beta(t) dt + sqrt(2 Gamma beta(t)) dW

with critical damping ``Gamma^2 = 4 M`` (so ``Gamma = 2 / sqrt(m_inv)``) and
``beta(t) = beta0 + beta1 t``. Every operator is a 2x2 block shared by all data coordinates.
Closed forms: docs/background/sdes.md#cld (CLD-SGM's ``sde_lib.CLD``), evaluated in the
overflow-safe rearranged
form (no ``e^{+4gB}`` factor), with the regularised incomplete gamma function for the position
variance so that small ``t`` keeps full relative precision.

Kernels. ``kernel="hsm"`` (hybrid score matching, the CLD default): ``u_t | x_0`` with the
initial velocity marginalised, initial variances ``(a, c) = (0, gamma M)``; :meth:`lift` sets
``v_0 = 0``. ``kernel="dsm"``: ``u_t | (x_0, v_0)``, ``(a, c) = (0, 0)``; :meth:`lift` draws
``v_0 ~ N(0, gamma M)``. Both give the same marginals ``p_t`` of the augmented data law
``p_0(x) N(v; 0, gamma M)``. :meth:`point_kernel` is always the ``(0, 0)`` kernel (used by
:mod:`diffkit.sdes.exact`); :meth:`kernel_from` takes any initial variances.

``numerical_eps``: CLD-SGM adds it to ``Sigma_xx`` and ``Sigma_vv`` after evaluation so that a
Cholesky factor exists as ``t -> 0``. Here it is added to the *initial* variances instead
(``Sigma_t + eps Psi Psi^T`` rather than ``Sigma_t + eps I``): identical at ``t = 0``, different by
at most ``eps`` afterwards, and the regularised covariance still solves the Lyapunov ODE, so
gDDIM's ``R_t`` satisfies ``R R^T = Sigma`` exactly. Use ``1e-9`` for images, ``1e-6`` for 2-D
toys (CLD-SGM configs).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import GaussianKernel, LinearSDE, as_time
from diffkit.sdes.operators import LinearOp

__all__ = ["CLDSDE"]

# Gauss-Legendre rule on [0, 1] used for the R-factor angle quadrature.
_GL_ORDER = 10


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return (
        torch.as_tensor(0.5 * (x + 1.0), dtype=torch.float64),
        torch.as_tensor(0.5 * w, dtype=torch.float64),
    )


def _block(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """``[[a, b], [c, d]]`` stacked on two trailing axes."""
    return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)


class CLDSDE(LinearSDE):
    """Critically-damped Langevin diffusion on ``(x, v)``, states ``(B, 2, *S)``.

    Args:
        m_inv: inverse mass ``M^{-1} > 0`` (CLD-SGM: 4). The damping is critical,
            ``Gamma = 2 / sqrt(m_inv)`` (1 for the default).
        gamma: initial velocity variance factor, ``v_0 ~ N(0, gamma M)`` (CLD-SGM: 0.04).
        beta0: ``beta(0) > 0`` (CLD-SGM: 4).
        beta1: slope of ``beta(t) = beta0 + beta1 t`` (CLD-SGM: 0); ``beta(T)`` must be > 0.
        numerical_eps: variance added to both initial variances (1e-9 images, 1e-6 2-D toys).
        kernel: training kernel, ``hsm`` (conditioned on ``x_0``) or ``dsm`` (on ``(x_0, v_0)``).
        T: end time.
        t_min: default sampling truncation (CLD-SGM: 1e-3, followed by a denoising step).
        r_grid: number of quadrature intervals for gDDIM's ``R_t`` angle table.
    """

    block = 2

    def __init__(
        self,
        m_inv: float = 4.0,
        gamma: float = 0.04,
        beta0: float = 4.0,
        beta1: float = 0.0,
        numerical_eps: float = 1e-9,
        kernel: Literal["hsm", "dsm"] = "hsm",
        T: float = 1.0,
        t_min: float = 1e-3,
        r_grid: int = 256,
    ) -> None:
        super().__init__()
        if not m_inv > 0:
            raise ValueError(f"CLDSDE.m_inv (inverse mass M^-1) must be > 0, got {m_inv}")
        if not gamma >= 0:
            raise ValueError(
                f"CLDSDE.gamma (initial velocity variance / M) must be >= 0, got {gamma}"
            )
        if T <= 0 or not 0 <= t_min < T:
            raise ValueError(f"CLDSDE needs T > 0 and 0 <= t_min < T, got T={T}, t_min={t_min}")
        if not beta0 > 0 or not beta0 + beta1 * T > 0:
            raise ValueError(
                f"CLDSDE.beta0 must be > 0 and beta0 + beta1 T > 0 (beta(t) > 0 on [0, T]); got "
                f"beta0={beta0}, beta1={beta1}, T={T}"
            )
        if not numerical_eps >= 0:
            raise ValueError(f"CLDSDE.numerical_eps must be >= 0, got {numerical_eps}")
        if kernel not in ("hsm", "dsm"):
            raise ValueError(f"CLDSDE.kernel must be 'hsm' or 'dsm', got {kernel!r}")
        if r_grid < 8:
            raise ValueError(f"CLDSDE.r_grid must be >= 8, got {r_grid}")
        self.m_inv, self.gamma = float(m_inv), float(gamma)
        self.beta0, self.beta1 = float(beta0), float(beta1)
        self.numerical_eps, self.kernel_mode = float(numerical_eps), kernel
        self.T, self.t_min = float(T), float(t_min)
        self.M = 1.0 / self.m_inv
        self.Gamma = 2.0 * math.sqrt(self.M)  # critical damping
        self.g = 1.0 / self.Gamma  # CLD-SGM's g; 2g = M^{-1/2}, 4g^2 = M^{-1}
        self.velocity_variance = self.gamma * self.M
        self._r_ok = self.numerical_eps > 0  # Sigma_0 positive definite
        self.r_grid = int(r_grid)
        # gDDIM R-factor angle table, built on first use (float64, survives .to(dtype)).
        self.register_buffer("_r_nodes", torch.zeros(0, dtype=torch.float64), persistent=False)
        self.register_buffer("_r_theta", torch.zeros(0, dtype=torch.float64), persistent=False)

    # ----------------------------------------------------------------- schedule
    def beta(self, t: Tensor | float) -> Tensor:
        return self.beta0 + self.beta1 * as_time(t)

    def integrated_beta(self, t: Tensor | float, s: Tensor | float = 0.0) -> Tensor:
        """``B = int_s^t beta``, float64, broadcast over ``t`` and ``s``."""
        t, s = as_time(t), as_time(s)
        return self.beta0 * (t - s) + 0.5 * self.beta1 * (t**2 - s**2)

    def _init_var_v(self) -> float:
        return self.velocity_variance if self.kernel_mode == "hsm" else 0.0

    # ----------------------------------------------------------------- operators
    def drift_op(self, t: Tensor | float) -> LinearOp:
        b = self.beta(t)
        z = torch.zeros_like(b)
        return LinearOp.block(_block(z, self.m_inv * b, -b, -self.Gamma * self.m_inv * b))

    def diffusion_op(self, t: Tensor | float) -> LinearOp:
        b = self.beta(t)
        z = torch.zeros_like(b)
        return LinearOp.block(_block(z, z, z, (2.0 * self.Gamma * b).sqrt()))

    def transition(self, t: Tensor | float, s: Tensor | float) -> LinearOp:
        return LinearOp.block(self._psi(self.integrated_beta(t, s)))

    def _psi(self, B: Tensor) -> Tensor:
        g = self.g
        e = torch.exp(-2.0 * g * B)
        return e[..., None, None] * _block(1 + 2 * g * B, 4 * g**2 * B, -B, 1 - 2 * g * B)

    def covariance(self, t: Tensor | float, var_x: Tensor | float, var_v: Tensor | float) -> Tensor:
        """Kernel covariance blocks ``(N, 2, 2)`` from independent initial variances
        ``(a, c) = (var_x, var_v)`` at time 0 (numbers or ``(N,)``), without ``numerical_eps``.

        Overflow-safe rearrangement of CLD-SGM's ``var`` (docs/background/sdes.md#cld): with
        ``x = 4 g B``,
        ``Sigma_xx = P(3, x) + e^{-x}[a(1 + x + x^2/4) + 16 g^4 B^2 c]`` (``P``: regularised
        lower incomplete gamma, ``P(3, x) = 1 - e^{-x}(1 + x + x^2/2)``),
        ``Sigma_xv = e^{-x}[-a B + 4 g^2 B c - 2 g B^2 (a - 2) - 8 g^3 B^2 c]``,
        ``Sigma_vv = M(1 - e^{-x}) + e^{-x}[Gamma B + (a - 2) B^2 + c (1 - x/2)^2]``.
        """
        B = self.integrated_beta(t)
        a = torch.as_tensor(var_x, dtype=torch.float64)
        c = torch.as_tensor(var_v, dtype=torch.float64)
        g, M = self.g, self.M
        x = 4.0 * g * B
        e = torch.exp(-x)
        sxx = torch.special.gammainc(torch.full_like(x, 3.0), x) + e * (
            a * (1 + x + 0.25 * x**2) + 16 * g**4 * B**2 * c
        )
        sxv = e * (-a * B + 4 * g**2 * B * c - 2 * g * B**2 * (a - 2) - 8 * g**3 * B**2 * c)
        svv = -M * torch.expm1(-x) + e * (self.Gamma * B + (a - 2) * B**2 + c * (1 - 0.5 * x) ** 2)
        return _block(sxx, sxv, sxv, svv)

    def kernel_from(
        self, t: Tensor | float, var_x: Tensor | float, var_v: Tensor | float
    ) -> GaussianKernel:
        """Kernel from independent initial variances ``(a, c)``, plus ``numerical_eps`` on both."""
        self.check_time(t)
        eps = self.numerical_eps
        cov = LinearOp.block(self.covariance(t, var_x + eps, var_v + eps))
        return GaussianKernel(mean_op=self.transition(t, 0.0), cov=cov, scale=cov.cholesky())

    def kernel(self, t: Tensor | float) -> GaussianKernel:
        """Training kernel: ``hsm`` ``(a, c) = (0, gamma M)``; ``dsm`` ``(0, 0)``."""
        return self.kernel_from(t, 0.0, self._init_var_v())

    def point_kernel(self, t: Tensor | float) -> GaussianKernel:
        """Kernel from a point mass in the full state, ``(a, c) = (0, 0)``."""
        return self.kernel_from(t, 0.0, 0.0)

    def ell(self, t: Tensor | float) -> Tensor:
        """HSM's ``ell_t = 1 / L_vv`` of the hsm kernel (CLD-SGM's noise_multiplier is
        ``-ell_t``), ``(N,)``; ``grad_v log p(u_t | x_0) = -ell_t eps_v``."""
        eps = self.numerical_eps
        cov = self.covariance(t, eps, self.velocity_variance + eps)
        sxx, sxv, svv = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
        return (sxx / (sxx * svv - sxv**2)).sqrt()

    # ----------------------------------------------------------------- state handling
    def lift(self, x0: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``(B, *S) -> (B, 2, *S)``: ``v_0 = 0`` (hsm) or ``v_0 ~ N(0, gamma M)`` (dsm)."""
        if self.kernel_mode == "hsm":
            v0 = torch.zeros_like(x0)
        else:
            z = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            v0 = math.sqrt(self.velocity_variance) * z
        return torch.stack([x0, v0], 1)

    def project(self, u: Tensor) -> Tensor:
        if u.dim() < 2 or u.shape[1] != 2:
            raise ValueError(f"CLD states are (B, 2, *S); got {tuple(u.shape)}")
        return u[:, 0]

    def prior_cov(self) -> LinearOp:
        one = torch.ones(1, dtype=torch.float64)
        return LinearOp.block(_block(one, 0 * one, 0 * one, self.M * one))

    # ----------------------------------------------------------------- noise level
    def noise_level(self, t: Tensor | float) -> Tensor:
        """``rho(t) = sqrt(Sigma_xx^0(t)) / Psi_xx(t, 0)``: the position noise-to-signal ratio
        from a point mass (no ``numerical_eps``), strictly increasing, 0 at ``t = 0``. For
        small ``B`` it grows like ``B^{3/2}``; it reduces to ``sigma/alpha`` in spirit."""
        B = self.integrated_beta(t)
        x = 4.0 * self.g * B
        sxx = torch.special.gammainc(torch.full_like(x, 3.0), x)
        psi_xx = torch.exp(-2.0 * self.g * B) * (1 + 2 * self.g * B)
        return sxx.sqrt() / psi_xx

    # ----------------------------------------------------------------- gDDIM's R_t
    def _omega10(self, t: Tensor) -> Tensor:
        """Angular velocity of ``Q = L^{-1} R`` (R = L Q, Q a rotation): ``theta' = Omega_10``
        with ``Omega = L^{-1}(F + 1/2 G G^T Sigma^{-1}) L - Phi(L^{-1} Sigma' L^{-T})``."""
        k = self.kernel(t)
        sig, lo = k.cov.coef, k.scale.coef
        f, gm = self.drift_op(t).coef, self.diffusion_op(t).coef
        ggt = gm @ gm.mT
        dsig = f @ sig + sig @ f.mT + ggt
        linv = torch.linalg.inv(lo)
        m = f + 0.5 * ggt @ torch.linalg.inv(sig)
        p = linv @ m @ lo
        s = linv @ dsig @ linv.mT
        return p[..., 1, 0] - s[..., 1, 0]

    def _build_theta_table(self, n: int) -> tuple[Tensor, Tensor]:
        t_geo = torch.logspace(-10, -2, n // 4, dtype=torch.float64) * self.T
        t_lin = torch.linspace(1e-2, 1.0, n - n // 4, dtype=torch.float64)[1:] * self.T
        nodes = torch.cat([torch.zeros(1, dtype=torch.float64), t_geo, t_lin])
        theta = torch.cat([torch.zeros(1, dtype=torch.float64), self._integrate(nodes)])
        return nodes, theta.cumsum(0)

    def _integrate(self, nodes: Tensor) -> Tensor:
        """``int_{nodes[i]}^{nodes[i+1]} Omega_10`` for consecutive nodes (Gauss-Legendre)."""
        gx, gw = _gauss_legendre(_GL_ORDER)
        lo, hi = nodes[:-1], nodes[1:]
        pts = lo[:, None] + (hi - lo)[:, None] * gx
        vals = self._omega10(pts.reshape(-1)).reshape(pts.shape)
        return (vals * gw).sum(-1) * (hi - lo)

    def kernel_factor_R(self, t: Tensor | float) -> LinearOp:
        """gDDIM's factor ``R_t`` with ``R R^T = Sigma_t`` (training kernel), solving
        ``dR/dt = (F + 1/2 G G^T Sigma^{-1}) R``, ``R_0 = diag(sqrt(eps), sqrt(gamma M + eps))``
        (hsm; ``sqrt(eps) I`` for dsm) [gDDIM, 2206.05564].

        Computed as ``R_t = L_t Q(theta_t)`` with ``L_t`` the Cholesky factor and ``Q`` a
        rotation whose angle ``theta_t`` is a quadrature of the closed-form angular velocity
        (independent of ``Q``), stored as a float64 table at nodes and completed by
        Gauss-Legendre to the requested ``t``. Returns a ``(N, 2, 2)`` block operator."""
        if not self._r_ok:
            raise ValueError(
                "CLDSDE.kernel_factor_R needs a positive-definite initial covariance: use "
                f"numerical_eps > 0 (got {self.numerical_eps})"
            )
        if self._r_nodes.numel() == 0:
            device = self._r_nodes.device
            nodes, theta = self._build_theta_table(self.r_grid)
            self._r_nodes, self._r_theta = nodes.to(device), theta.to(device)
        t = as_time(t, device=self._r_nodes.device)
        self.check_time(t)
        nodes, table = self._r_nodes.to(torch.float64), self._r_theta.to(torch.float64)
        idx = (torch.searchsorted(nodes, t, right=True) - 1).clamp(0, nodes.numel() - 1)
        start = nodes[idx]
        gx, gw = _gauss_legendre(_GL_ORDER)
        pts = start[:, None] + (t - start)[:, None] * gx.to(t.device)
        extra = (self._omega10(pts.reshape(-1)).reshape(pts.shape) * gw.to(t.device)).sum(-1)
        theta = table[idx] + extra * (t - start)
        c, s = theta.cos(), theta.sin()
        rot = _block(c, -s, s, c)
        lo = self.kernel(t).scale
        return LinearOp.block(lo.coef @ rot)
