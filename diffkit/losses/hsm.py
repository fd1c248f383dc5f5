"""Hybrid score matching for critically-damped Langevin diffusion [CLD, 2112.07068 Sec. 3.2;
CLD-SGM ``losses.py``] (docs/background/losses.md#hsm, docs/background/sdes.md#cld).

The initial velocity is marginalised instead of sampled: ``u_0 = (x_0, 0)`` in the kernel *mean*,
and the kernel covariance starts from ``diag(0, gamma M)`` (the SDE's training :meth:`kernel`,
conditioned on ``x_0`` only). With ``u_t = Psi(t, 0) u_0 + L_t eps`` (``L_t`` lower Cholesky) the
target is only the velocity score

``grad_v log p(u_t | x_0) = [-L_t^{-T} eps]_v = -l_t eps_v,   l_t = 1 / L_vv,``

because ``G G^T = diag(0, 2 Gamma beta)``: the samplers need nothing else. The network outputs
the velocity half only (``output_kind = "velocity"``); wrap it with
``Parameterization(sde, net, target, velocity_only=True)``.

Targets and weightings:

* ``target="eps"``, ``weighting="uniform"``: ``||eps_hat_v - eps_v||^2`` (CLD-SGM's
  ``reweightedv2``, the CIFAR-10 and toy default);
* ``target="score"``, ``weighting="uniform"``: ``||s_hat_v - s_v||^2``;
* ``weighting="likelihood"`` (either target): ``g_v^2 ||s_hat_v - s_v||^2`` with
  ``g_v^2 = 2 Gamma beta(t)`` = ``||G^T (s_hat - s)||^2`` (ScoreFlow's maximum-likelihood weight;
  CLD-SGM's ``likelihood`` uses ``beta Gamma = g_v^2 / 2``, i.e. this with ``half_sum``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.losses.base import Loss, LossOutput
from diffkit.losses.dsm import Reduction, reduce_dims
from diffkit.prediction import Prediction
from diffkit.sdes.base import GaussianKernel, LinearSDE

__all__ = ["HybridScoreMatching"]

HSMTarget = Literal["eps", "score"]
HSMWeighting = Literal["uniform", "likelihood"]


def velocity_score_target(kernel: GaussianKernel, eps: Tensor) -> Tensor:
    """``[-K^{-T} eps]_v``, ``(B, *S)``, for the state noise ``eps`` ``(B, 2, *S)``."""
    return (-kernel.scale.T.solve(eps))[:, 1]


class HybridScoreMatching(Loss):
    """CLD hybrid score matching (the network predicts the velocity half only).

    Args:
        target: ``eps`` (velocity noise, ``s_v = -l_t eps_v``) or ``score`` (``s_v``).
        weighting: ``uniform`` (unweighted MSE in the target's space) or ``likelihood``.
        time_sampling: ``uniform`` | ``stratified`` | ``log_normal``.
        t_min: smallest training time (1e-5 in CLD-SGM).
        reduction: ``sum`` (CLD-SGM), ``mean`` or ``half_sum`` over the data dimensions.
        p_mean: mean of ``ln rho`` for ``log_normal``.
        p_std: standard deviation of ``ln rho`` for ``log_normal``.
        mixed_score: the module wraps the network with CLD-SGM's mixed score
            ``s_v = -v / Sigma_vv(t) + s_v^net`` (read by the module as ``loss.mixed_score``).
        residual: ``gaussian``: the module adds the network's velocity score to the velocity
            half of the exact score of ``N(0, sigma_data^2 I)`` data (velocity ``N(0, gamma M)``)
            under the SDE (see :mod:`diffkit.denoisers.parameterization`); exclusive with
            ``mixed_score``.
        sigma_data: data standard deviation for ``residual`` and the network's input scaling.
    """

    output_kind = "velocity"

    def __init__(
        self,
        target: HSMTarget = "eps",
        weighting: HSMWeighting = "uniform",
        time_sampling: Literal["uniform", "stratified", "log_normal"] = "uniform",
        t_min: float = 1e-5,
        reduction: Reduction = "mean",
        p_mean: float = -1.2,
        p_std: float = 1.2,
        mixed_score: bool = False,
        residual: Literal["none", "gaussian"] = "none",
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        if residual not in ("none", "gaussian"):
            raise ValueError(f"hsm.residual must be 'none' or 'gaussian', got {residual!r}")
        if residual == "gaussian" and mixed_score:
            raise ValueError(
                "hsm.residual='gaussian' and hsm.mixed_score=true are two analytic bases for the "
                "velocity score: set hsm.mixed_score=false or hsm.residual='none'"
            )
        if sigma_data <= 0:
            raise ValueError(f"hsm.sigma_data must be > 0, got {sigma_data}")
        if target not in ("eps", "score"):
            raise ValueError(
                f"hsm.target must be 'eps' (velocity noise) or 'score' (velocity score), got "
                f"{target!r}; x0 and v targets need the full state: use the 'dsm' loss"
            )
        if weighting not in ("uniform", "likelihood"):
            raise ValueError(f"hsm.weighting must be 'uniform' or 'likelihood', got {weighting!r}")
        if time_sampling not in ("uniform", "stratified", "log_normal"):
            raise ValueError(
                "hsm.time_sampling must be 'uniform', 'stratified' or 'log_normal', got "
                f"{time_sampling!r}"
            )
        if reduction not in ("mean", "sum", "half_sum"):
            raise ValueError(
                f"hsm.reduction must be 'mean', 'sum' or 'half_sum', got {reduction!r}"
            )
        if t_min <= 0:
            raise ValueError(f"hsm.t_min must be > 0, got {t_min}")
        self.target = target
        self.weighting = weighting
        self.time_sampling = time_sampling
        self.t_min = float(t_min)
        self.reduction = reduction
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.mixed_score = bool(mixed_score)
        self.residual = residual
        self.sigma_data = float(sigma_data)

    def check_sde(self, sde: LinearSDE) -> None:
        """Refuse SDEs without a (position, velocity) state."""
        if getattr(sde, "block", 1) != 2:
            raise ValueError(
                f"the 'hsm' loss (hybrid score matching) is defined only for CLD-type SDEs with a "
                f"(position, velocity) state; {type(sde).__name__} has none: use loss 'dsm' "
                "(or sde 'cld' with 'hsm')"
            )
        if not self.t_min < sde.T:
            raise ValueError(f"hsm.t_min = {self.t_min} must be < T = {sde.T}")

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
        """``x0``: data ``(B, *S)`` -> per-sample losses ``(B,)``; ``t`` overrides the draw."""
        self.check_once(sde)
        t = self.sample_time(sde, x0.shape[0], generator, x0.device, t)
        u0 = torch.stack([x0, torch.zeros_like(x0)], dim=1)
        u_t, eps = sde.perturb(u0, t, generator=generator)
        pred: Prediction = model(u_t, t) if cond is None else model(u_t, t, cond)
        return LossOutput(loss=self.per_sample(sde, pred, eps), t=t)

    def per_sample(self, sde: LinearSDE, pred: Prediction, eps: Tensor) -> Tensor:
        """Weighted per-sample loss ``(B,)`` from a prediction and the state noise ``eps``."""
        kernel = pred.kernel
        s_hat = pred.score()  # (B, 2, *S), position half unused
        s_v = velocity_score_target(kernel, eps)
        if self.weighting == "likelihood":
            g = sde.diffusion_op(pred.t)
            zero = torch.zeros_like(s_v)
            diff = g.T.apply(torch.stack([zero, s_hat[:, 1] - s_v], dim=1))[:, 1]
            return reduce_dims(diff**2, self.reduction)
        if self.target == "score":
            return reduce_dims((s_hat[:, 1] - s_v) ** 2, self.reduction)
        zero = torch.zeros_like(s_v)
        eps_hat_v = (-kernel.scale.T.apply(torch.stack([zero, s_hat[:, 1]], dim=1)))[:, 1]
        return reduce_dims((eps_hat_v - eps[:, 1]) ** 2, self.reduction)
