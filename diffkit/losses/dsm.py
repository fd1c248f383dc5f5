"""Denoising score matching for any linear SDE [Vincent11; Song+21, 2011.13456 eq. 7;
DEIS, 2204.13902; gDDIM, 2206.05564] (docs/background/losses.md).

One training step: ``x0 ~ data``, ``t ~ pi(t)``, ``u_0 = sde.lift(x0)``, ``u_t = Psi(t, 0) u_0
+ K_t eps``, ``pred = model(u_t, t)``; the per-sample loss is a weighted squared error in the
target's space. The regression targets are, operator-aware:

* ``eps``: ``eps`` (against the kernel's square root ``K_t``, Cholesky for CLD, per-mode for
  blurring);
* ``x0``: the state ``u_0``;
* ``score``: ``-K_t^{-T} eps``;
* ``v``: ``alpha eps - sigma u_0`` (variance-preserving scalar kernels only) [PD, 2202.00512].

Weightings and their equivalences are documented in :mod:`diffkit.losses.weighting`; time laws
in :mod:`diffkit.losses.time_sampling`. With ``time_sampling="importance"`` (likelihood weighting,
scalar SDEs) ``t`` is drawn proportional to ``g^2 / sigma^2`` and the weight becomes the constant
``Z / (T - t_min)``, so the expectation equals that of ``likelihood`` with uniform time.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.losses.base import Loss, LossOutput
from diffkit.losses.time_sampling import TimeSampling, likelihood_normaliser
from diffkit.losses.weighting import WEIGHTINGS, Weighting, eps_weight, target_factor
from diffkit.prediction import TARGETS, Prediction, Target
from diffkit.sdes.base import GaussianKernel, LinearSDE

__all__ = ["DenoisingScoreMatching", "Reduction", "reduce_dims"]

Reduction = Literal["mean", "sum", "half_sum"]
TIME_SAMPLINGS = ("uniform", "stratified", "log_normal", "importance")


def reduce_dims(sq: Tensor, reduction: str) -> Tensor:
    """Per-sample reduction of squared errors ``(B, ...)`` to ``(B,)``."""
    flat = sq.reshape(sq.shape[0], -1)
    if reduction == "mean":
        return flat.mean(-1)
    if reduction == "sum":
        return flat.sum(-1)
    if reduction == "half_sum":
        return 0.5 * flat.sum(-1)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'half_sum', got {reduction!r}")


def regression_target(
    target: str, kernel: GaussianKernel, u0: Tensor, eps: Tensor, pred: Prediction
) -> tuple[Tensor, Tensor]:
    """``(prediction, truth)`` in the space of ``target``."""
    if target == "eps":
        return pred.eps(), eps
    if target == "x0":
        return pred.x0(), u0
    if target == "score":
        return pred.score(), -kernel.scale.T.solve(eps)
    if target == "v":
        alpha, sigma = kernel.alpha_sigma()
        shape = (-1,) + (1,) * (u0.dim() - 1)
        a = alpha.to(u0.dtype).reshape(shape)
        s = sigma.to(u0.dtype).reshape(shape)
        return pred.v(), a * eps - s * u0
    raise ValueError(f"target must be one of {TARGETS}, got {target!r}")


class DenoisingScoreMatching(Loss):
    """Denoising score matching with a switchable target, weighting and time law.

    Args:
        target: network parameterisation (``eps`` | ``x0`` | ``v`` | ``score``).
        weighting: ``uniform`` (unweighted MSE in the target's space) | ``sigma2`` |
            ``likelihood`` | ``edm`` | ``min_snr`` (see :mod:`diffkit.losses.weighting`).
        time_sampling: ``uniform`` | ``stratified`` | ``log_normal`` | ``importance``.
        t_min: smallest training time (``1e-5`` as in score_sde, CLD-SGM, gDDIM).
        reduction: over dimensions: ``mean`` (score_sde ``reduce_mean``), ``sum`` or
            ``half_sum``; the batch mean is taken by the module.
        sigma_data: ``s_d`` of the ``edm`` weighting.
        min_snr_gamma: ``gamma`` of ``min_snr`` (5 in MinSNR, 2303.09556).
        p_mean: mean of ``ln rho`` for ``log_normal`` time sampling (EDM: -1.2).
        p_std: standard deviation of ``ln rho`` (EDM: 1.2).
        preconditioning: ``none`` or ``edm``: the module wraps the network with EDM's
            ``c_skip, c_out, c_in, c_noise`` (scalar SDEs, ``target="x0"``; ``sigma_data`` is
            shared). EDM's recipe is ``target=x0, weighting=edm, time_sampling=log_normal,
            preconditioning=edm``; its effective objective is an unweighted MSE on the raw
            network output (``lambda c_out^2 = 1``).
        residual: ``none`` or ``gaussian``: the module makes the network predict the residual
            over the exact prediction for ``N(0, sigma_data^2 I)`` data under the SDE's kernel
            (targets ``eps``, ``x0``, ``score``, and ``v`` on vp; see
            :mod:`diffkit.denoisers.parameterization`). ``sigma_data`` is shared.
    """

    def __init__(
        self,
        target: Target = "eps",
        weighting: Weighting = "uniform",
        time_sampling: TimeSampling = "uniform",
        t_min: float = 1e-5,
        reduction: Reduction = "mean",
        sigma_data: float = 0.5,
        min_snr_gamma: float = 5.0,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        preconditioning: Literal["none", "edm"] = "none",
        residual: Literal["none", "gaussian"] = "none",
    ) -> None:
        super().__init__()
        if residual not in ("none", "gaussian"):
            raise ValueError(f"dsm.residual must be 'none' or 'gaussian', got {residual!r}")
        if residual == "gaussian" and preconditioning != "none":
            raise ValueError(
                "dsm.residual='gaussian' cannot be combined with dsm.preconditioning='edm': "
                "set one of them to 'none'"
            )
        if preconditioning not in ("none", "edm"):
            raise ValueError(
                f"dsm.preconditioning must be 'none' or 'edm', got {preconditioning!r}"
            )
        if preconditioning == "edm" and target != "x0":
            raise ValueError(
                "dsm.preconditioning='edm' wraps the network as a denoiser D = c_skip x + c_out F: "
                f"set target='x0' (got target={target!r})"
            )
        if target not in TARGETS:
            raise ValueError(f"dsm.target must be one of {TARGETS}, got {target!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"dsm.weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(
                f"dsm.time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}"
            )
        if reduction not in ("mean", "sum", "half_sum"):
            raise ValueError(
                f"dsm.reduction must be 'mean', 'sum' or 'half_sum', got {reduction!r}"
            )
        if time_sampling == "importance" and weighting != "likelihood":
            raise ValueError(
                "dsm.time_sampling='importance' samples t proportional to the likelihood weight; "
                f"it needs weighting='likelihood', got weighting={weighting!r}"
            )
        if t_min <= 0:
            raise ValueError(f"dsm.t_min must be > 0, got {t_min}")
        if sigma_data <= 0 or min_snr_gamma <= 0 or p_std <= 0:
            raise ValueError("dsm.sigma_data, dsm.min_snr_gamma and dsm.p_std must be > 0")
        self.target = target
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        self.reduction = reduction
        self.sigma_data = float(sigma_data)
        self.min_snr_gamma = float(min_snr_gamma)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.preconditioning = preconditioning
        self.residual = residual

    # ------------------------------------------------------------------ validation
    def check_sde(self, sde: LinearSDE) -> None:
        """Refuse combinations that are undefined for ``sde`` (raises ``ValueError``)."""
        name = type(sde).__name__
        if not self.t_min < sde.T:
            raise ValueError(f"dsm.t_min = {self.t_min} must be < T = {sde.T} of {name}")
        scalar = sde.kernel(torch.tensor([0.5 * sde.T], dtype=torch.float64)).is_scalar
        if self.target == "v" and not (getattr(sde, "supports_v", False) and scalar):
            raise ValueError(
                f"dsm.target='v' is defined only for variance-preserving scalar kernels "
                f"(alpha^2 + sigma^2 = 1, e.g. vp); {name} is not: use target 'eps' or 'x0'"
            )
        if self.preconditioning == "edm" and not scalar:
            raise ValueError(
                f"dsm.preconditioning='edm' needs a scalar kernel (vp, ve); {name} has an "
                "operator-valued kernel: use preconditioning='none'"
            )
        if self.time_sampling == "importance" and not scalar:
            raise ValueError(
                f"dsm.time_sampling='importance' needs a scalar kernel (vp, ve); {name} has an "
                "operator-valued kernel: use time_sampling='uniform' with weighting='likelihood'"
            )

    # ------------------------------------------------------------------ loss
    def forward(
        self,
        model,
        sde: LinearSDE,
        x0: Tensor,
        cond: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        t: Tensor | None = None,
    ) -> LossOutput:
        """``x0``: data ``(B, *S)`` -> per-sample losses ``(B,)``.

        ``t`` (float64 ``(B,)``) overrides the time sampling (for tests and evaluation); the
        importance weight is then not applied.
        """
        self.check_once(sde)
        importance = t is None and self.time_sampling == "importance"
        t = self.sample_time(sde, x0.shape[0], generator, x0.device, t)
        u0 = sde.lift(x0, generator=generator)
        u_t, eps = sde.perturb(u0, t, generator=generator)
        pred: Prediction = model(u_t, t) if cond is None else model(u_t, t, cond)
        loss = self.per_sample(sde, pred, u0, eps, importance=importance)
        return LossOutput(loss=loss, t=t)

    def per_sample(
        self,
        sde: LinearSDE,
        pred: Prediction,
        u0: Tensor,
        eps: Tensor,
        *,
        importance: bool = False,
    ) -> Tensor:
        """The weighted per-sample loss ``(B,)`` of a prediction at ``(pred.u_t, pred.t)``."""
        kernel, t = pred.kernel, pred.t
        scalar = kernel.is_scalar
        dtype = pred.raw.dtype
        if importance:
            z = likelihood_normaliser(sde, self.t_min) / (sde.T - self.t_min)
            est, truth = pred.eps(), eps
            return z * reduce_dims((est - truth) ** 2, self.reduction)
        if self.weighting == "uniform":
            est, truth = regression_target(self.target, kernel, u0, eps, pred)
            return reduce_dims((est - truth) ** 2, self.reduction)
        if scalar:
            alpha, sigma = kernel.alpha_sigma()
            w = eps_weight(
                self.weighting,
                sde,
                t,
                kernel,
                scalar=True,
                sigma_data=self.sigma_data,
                min_snr_gamma=self.min_snr_gamma,
            ) * target_factor(self.target, alpha, sigma)
            est, truth = regression_target(self.target, kernel, u0, eps, pred)
            return w.to(device=u0.device, dtype=dtype) * reduce_dims(
                (est - truth) ** 2, self.reduction
            )
        if self.weighting == "likelihood":
            g = sde.diffusion_op(t)
            diff = g.T.apply(pred.score() - (-kernel.scale.T.solve(eps)))
            return reduce_dims(diff**2, self.reduction)
        w = eps_weight(
            self.weighting,
            sde,
            t,
            kernel,
            scalar=False,
            sigma_data=self.sigma_data,
            min_snr_gamma=self.min_snr_gamma,
        )
        return w.to(device=u0.device, dtype=dtype) * reduce_dims(
            (pred.eps() - eps) ** 2, self.reduction
        )
