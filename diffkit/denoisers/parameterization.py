"""Turn a raw denoiser network into a score model (losses.md §2, §5; DESIGN.md §3).

:class:`Parameterization` wraps ``net(u, c_noise, cond)`` and a
:class:`~diffkit.sdes.base.LinearSDE` into ``model(u_t, t, cond=None) -> Prediction``:

1. the kernel at ``t`` is evaluated in float64;
2. the network input is ``c_in u_t`` (``input_scaling``), with ``c_in`` the inverse square
   root of the diagonal of ``sigma_data^2 Psi Psi^T + Sigma_t`` (the marginal variance of
   data with per-coordinate variance ``sigma_data^2``), cast to the network's dtype; for
   scalar kernels ``c_in = 1 / sqrt(sigma_data^2 alpha^2 + sigma^2)``, EDM's ``c_in`` in
   sigma-space [EDM, 2206.00364, Table 1];
3. ``c_noise = sde.noise_condition(t)`` (or ``log(rho) / 4`` under EDM preconditioning);
4. the raw output is returned as a :class:`~diffkit.prediction.Prediction` in ``target``.

Options:

* ``preconditioning="edm"`` (scalar kernels only): ``D(x~; rho) = c_skip x~ + c_out F(c_in x~;
  c_noise)`` with ``x~ = u_t / alpha`` and ``rho = sigma / alpha``, ``c_skip = s_d^2 / (rho^2 +
  s_d^2)``, ``c_out = rho s_d / sqrt(rho^2 + s_d^2)``, ``c_in = 1 / sqrt(rho^2 + s_d^2)``,
  ``c_noise = ln(rho) / 4``; the prediction is ``x0 = D``.
* ``velocity_only=True`` (CLD hybrid score matching): the network outputs only the velocity half
  ``(B, *data_shape)``, read as the velocity noise ``eps_v`` (``target="eps"``, CLD-SGM's
  ``reweightedv2`` parameterisation ``s_v = -l_t eps_v``) or as the velocity score ``s_v``
  (``target="score"``). It is placed into a full-state score ``(0, s_v)`` whose position half
  is zero; the Prediction is flagged ``velocity_only`` so that conversions needing the position
  half refuse. With the Cholesky factor ``K = L_t``,
  ``s_v = -[K^{-T} (0, eps_v)]_v = -eps_v / L_vv``.
* ``mixed_score=True`` (with ``velocity_only``; CLD-SGM's ``mixed_score``): the network learns a
  residual on top of the analytic velocity score of the reference kernel,
  ``s_v = -v / Sigma_vv(t) + s_v^net``, with ``Sigma_vv`` the training kernel's velocity
  variance (initial variances ``(0, gamma M)``) [CLD, 2112.07068 §3.2; losses.md §7].
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from diffkit.denoisers.base import Denoiser
from diffkit.prediction import TARGETS, Prediction, Target, broadcast_time
from diffkit.sdes.base import GaussianKernel, LinearSDE
from diffkit.sdes.operators import LinearOp

__all__ = ["Parameterization", "Preconditioning", "Residual", "gaussian_prediction"]

Preconditioning = Literal["none", "edm"]
Residual = Literal["none", "gaussian"]


def kernel_is_scalar(kernel: GaussianKernel) -> bool:
    """Whether ``u_t = alpha u_0 + sigma eps`` with scalar ``alpha``, ``sigma`` per time."""
    return kernel.mean_op.is_scalar and kernel.scale.is_scalar


def scalar_alpha_sigma(kernel: GaussianKernel) -> tuple[Tensor, Tensor]:
    """``(alpha, sigma)``, each ``(N,)`` float64, of a scalar kernel."""
    return kernel.mean_op.coef[:, 0, 0], kernel.scale.coef[:, 0, 0]


def marginal_input_scale(kernel: GaussianKernel, sigma_data: float) -> LinearOp:
    """``c_in``: inverse square root of ``diag(sigma_data^2 Psi Psi^T + Sigma)`` per block."""
    psi = kernel.mean_op
    var = (psi @ psi.T) * (sigma_data**2) + kernel.cov
    c = var.coef
    if var.k == 1:
        return LinearOp(c.clamp_min(1e-30).rsqrt(), var.basis)
    diag = torch.diagonal(c, dim1=-2, dim2=-1).clamp_min(1e-30).rsqrt()
    return LinearOp(torch.diag_embed(diag), var.basis)


def gaussian_prediction(
    sde: LinearSDE, u_t: Tensor, t: Tensor, kernel: GaussianKernel, target: str, sigma_data: float
) -> Tensor:
    """Exact ``target`` (``eps`` | ``x0`` | ``score``) of data ``N(0, sigma_data^2 I)`` at
    ``(u_t, t)``, float64 ``(B, *state)`` (see the module docstring, ``residual``).

    ``kernel`` is the SDE's training kernel at ``t``; the marginal uses the point kernel (the
    SDE's ``point_kernel`` if it defines one) and, for ``block = 2`` states, the initial
    velocity variance ``sde.velocity_variance``.
    """
    point = getattr(sde, "point_kernel", None)
    pk = point(t) if callable(point) else kernel
    a = pk.mean_op
    if sde.block == 1:
        c0 = LinearOp.scalar(torch.full((1,), sigma_data**2, dtype=torch.float64, device=t.device))
    else:
        vvar = getattr(sde, "velocity_variance", None)
        if vvar is None:
            raise ValueError(
                f"residual='gaussian' on {type(sde).__name__} (block = {sde.block}) needs the "
                "SDE's 'velocity_variance'; use residual='none'"
            )
        c0 = LinearOp.block(
            torch.diag(torch.tensor([sigma_data**2, float(vvar)], dtype=torch.float64)).to(
                t.device
            )[None]
        )
    cov = a @ c0 @ a.T + pk.cov
    u = u_t.to(torch.float64)
    score = -cov.solve(u)
    if target == "score":
        return score
    if target == "eps":
        return -kernel.scale.T.apply(score)
    if target == "x0":
        return kernel.mean_op.solve(u + kernel.cov.apply(score))
    raise ValueError(
        f"residual='gaussian' is defined for targets 'eps', 'x0' and 'score', got {target!r}"
    )


class Parameterization(nn.Module):
    """A score model built from a raw network.

    Args:
        sde: the forward SDE (its kernel defines every conversion).
        net: the raw network ``net(u, c_noise, cond)``.
        target: what the network output is (``eps`` | ``x0`` | ``v`` | ``score``).
        velocity_only: the network outputs only the velocity half (CLD HSM); ``target`` must be
            ``eps`` or ``score``.
        preconditioning: ``none`` or ``edm`` (scalar SDEs; requires ``target="x0"``).
        input_scaling: multiply the network input by ``c_in`` (see the module docstring).
        sigma_data: data standard deviation assumed by ``c_in`` and EDM preconditioning.
        mixed_score: add the analytic ``-v / Sigma_vv(t)`` to the velocity score (CLD HSM).
        residual: ``none`` or ``gaussian``: the network output is a residual over the exact
            prediction for ``N(0, sigma_data^2 I)`` data (targets ``eps``, ``x0``, ``score``).
    """

    def __init__(
        self,
        sde: LinearSDE,
        net: Denoiser,
        target: Target = "eps",
        *,
        velocity_only: bool = False,
        preconditioning: Preconditioning = "none",
        input_scaling: bool = True,
        sigma_data: float = 0.5,
        mixed_score: bool = False,
        residual: Residual = "none",
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"Parameterization.target must be one of {TARGETS}, got {target!r}")
        if preconditioning not in ("none", "edm"):
            raise ValueError(
                f"Parameterization.preconditioning must be 'none' or 'edm', got {preconditioning!r}"
            )
        if sigma_data <= 0:
            raise ValueError(f"Parameterization.sigma_data must be > 0, got {sigma_data}")
        probe = sde.kernel(torch.tensor([0.5 * sde.T], dtype=torch.float64))
        if target == "v" and not getattr(sde, "supports_v", False):
            raise ValueError(
                f"target 'v' is defined only for variance-preserving scalar SDEs; "
                f"{type(sde).__name__} has supports_v=False: use target 'eps' or 'x0'"
            )
        if velocity_only:
            if sde.block != 2:
                raise ValueError(
                    f"velocity_only=True needs a CLD-type SDE with (x, v) states (block = 2); "
                    f"{type(sde).__name__} has block = {sde.block}: set velocity_only=False"
                )
            if target not in ("eps", "score"):
                raise ValueError(
                    f"velocity_only=True supports target 'eps' (velocity noise) or 'score' "
                    f"(velocity score), got {target!r}"
                )
        if mixed_score and not velocity_only:
            raise ValueError(
                "mixed_score=True adds an analytic velocity score and needs velocity_only=True "
                "(CLD hybrid score matching, loss 'hsm')"
            )
        if preconditioning == "edm":
            if not kernel_is_scalar(probe):
                raise ValueError(
                    f"preconditioning='edm' needs a scalar kernel (vp, ve); "
                    f"{type(sde).__name__} has an operator-valued kernel: "
                    "use preconditioning='none'"
                )
            if target != "x0" or velocity_only:
                raise ValueError(
                    f"preconditioning='edm' predicts x0 (D = c_skip x + c_out F): set target='x0', "
                    f"got target={target!r}"
                )
        if residual not in ("none", "gaussian"):
            raise ValueError(
                f"Parameterization.residual must be 'none' or 'gaussian', got {residual!r}"
            )
        if residual == "gaussian":
            if target not in ("eps", "x0", "score"):
                raise ValueError(
                    f"residual='gaussian' is defined for targets 'eps', 'x0' and 'score', got "
                    f"target={target!r}: change the target or set residual='none'"
                )
            if velocity_only:
                raise ValueError(
                    "residual='gaussian' needs a full-state network; velocity_only=True (CLD "
                    "hybrid score matching, loss 'hsm') is not supported: use loss 'dsm' or "
                    "residual='none'"
                )
            if preconditioning != "none":
                raise ValueError(
                    "residual='gaussian' cannot be combined with preconditioning='edm' (whose "
                    "c_skip term is already a Gaussian skip): set one of them to 'none'"
                )
        self.sde = sde
        self.net = net
        self.residual: Residual = residual
        self.target: Target = target
        self.velocity_only = bool(velocity_only)
        self.preconditioning: Preconditioning = preconditioning
        self.input_scaling = bool(input_scaling)
        self.sigma_data = float(sigma_data)
        self.mixed_score = bool(mixed_score)

    def net_dtype(self) -> torch.dtype:
        for p in self.net.parameters():
            if p.is_floating_point():
                return p.dtype
        return torch.float32

    def forward(self, u_t: Tensor, t: Tensor | float, cond: Tensor | None = None) -> Prediction:
        """``u_t``: ``(B, *state)``; ``t``: ``(B,)`` (or a number) -> :class:`Prediction`."""
        b = u_t.shape[0]
        t = broadcast_time(t, b, u_t.device)
        kernel = self.sde.kernel(t)
        dtype = self.net_dtype()
        if self.preconditioning == "edm":
            return self._edm(u_t, t, kernel, cond, dtype)
        x_in = u_t
        if self.input_scaling:
            x_in = marginal_input_scale(kernel, self.sigma_data).apply(u_t.to(torch.float64))
        c_noise = self.sde.noise_condition(t).to(device=u_t.device, dtype=dtype)
        raw = self.net(x_in.to(dtype), c_noise, cond)
        if self.velocity_only:
            raw = self._velocity_to_score(raw, u_t, kernel)
            return Prediction(u_t, t, raw, kernel, "score", velocity_only=True)
        if raw.shape != u_t.shape:
            raise ValueError(
                f"the denoiser returned shape {tuple(raw.shape)} for states {tuple(u_t.shape)}; "
                "its spec.output_shape must equal the state shape for a full-state target"
            )
        if self.residual == "gaussian":
            base = gaussian_prediction(self.sde, u_t, t, kernel, self.target, self.sigma_data)
            raw = raw + base.to(raw.dtype)
        return Prediction(u_t, t, raw, kernel, self.target)

    def _velocity_to_score(self, raw: Tensor, u_t: Tensor, kernel: GaussianKernel) -> Tensor:
        if raw.shape != u_t[:, 1].shape:
            raise ValueError(
                f"a velocity-only denoiser must return the velocity half {tuple(u_t[:, 1].shape)}, "
                f"got {tuple(raw.shape)}; set spec.output_shape to the data shape"
            )
        zero = torch.zeros_like(raw)
        s_v = (
            raw
            if self.target == "score"
            else (-kernel.scale.T.solve(torch.stack([zero, raw], 1)))[:, 1]
        )
        if self.mixed_score:
            inv_var_v = LinearOp(1.0 / kernel.cov.coef[..., 1:, 1:], kernel.cov.basis)
            s_v = s_v - inv_var_v.apply(u_t[:, 1].to(torch.float64)).to(s_v.dtype)
        return torch.stack([zero, s_v], dim=1)

    def _edm(
        self,
        u_t: Tensor,
        t: Tensor,
        kernel: GaussianKernel,
        cond: Tensor | None,
        dtype: torch.dtype,
    ) -> Prediction:
        alpha, sigma = scalar_alpha_sigma(kernel)
        rho = sigma / alpha
        sd2 = self.sigma_data**2
        shape = (-1,) + (1,) * (u_t.dim() - 1)
        c_skip = (sd2 / (rho**2 + sd2)).reshape(shape)
        c_out = (rho * self.sigma_data / (rho**2 + sd2).sqrt()).reshape(shape)
        c_in = (1.0 / (rho**2 + sd2).sqrt()).reshape(shape)
        c_noise = (0.25 * rho.log()).to(device=u_t.device, dtype=dtype)
        x_tilde = u_t.to(torch.float64) / alpha.reshape(shape)
        f = self.net((c_in * x_tilde).to(dtype), c_noise, cond)
        d = c_skip.to(dtype) * x_tilde.to(dtype) + c_out.to(dtype) * f
        return Prediction(u_t, t, d.to(u_t.dtype), kernel, "x0")
