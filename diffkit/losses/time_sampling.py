"""Laws for the training time ``t`` (docs/background/losses.md#time-sampling). All draws are float64
and come only from the
generator passed in.

* ``uniform``: ``t ~ U[t_min, T]`` [Song+21].
* ``stratified``: ``t_b = t_min + (T - t_min) ((u + b / B) mod 1)``, one uniform ``u`` per batch
  (the low-variance sampler of VDM, 2107.00630).
* ``log_normal``: ``ln rho ~ N(p_mean, p_std^2)`` [EDM, 2206.00364], mapped to time through
  ``sde.t_from_noise_level`` and clipped to ``[t_min, T]``.
* ``importance``: ``t`` with density proportional to the likelihood weight in eps-space,
  ``g^2 / sigma^2 = -d log SNR / dt`` [ScoreFlow, 2101.09258 Sec. 5; VDM]. Its CDF is
  ``F(t) = (lambda(t_min) - lambda(t)) / (lambda(t_min) - lambda(T))`` with ``lambda = log SNR``
  for *any* scalar SDE, so ``t = t_from_noise_level(exp(-lambda / 2))`` with ``lambda`` uniform
  between the end values (for VP-Song this is losses.md's ``log expm1(B)`` inversion).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from diffkit.sdes.base import LinearSDE

__all__ = ["TimeSampling", "likelihood_normaliser", "sample_time"]

TimeSampling = Literal["uniform", "stratified", "log_normal", "importance"]


def _uniform(batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    return torch.rand(batch, generator=generator, dtype=torch.float64, device=device)


def likelihood_normaliser(sde: LinearSDE, t_min: float) -> float:
    """``Z = int_{t_min}^T g^2 / sigma^2 dt = log SNR(t_min) - log SNR(T)`` (scalar SDEs)."""
    lam = sde.log_snr(torch.tensor([t_min, sde.T], dtype=torch.float64))
    return float(lam[0] - lam[1])


def sample_time(
    kind: TimeSampling,
    sde: LinearSDE,
    batch: int,
    *,
    t_min: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Tensor:
    """Draw ``batch`` training times, float64 ``(batch,)`` in ``[t_min, T]``."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    t_max = float(sde.T)
    if kind == "uniform":
        return t_min + (t_max - t_min) * _uniform(batch, generator, device)
    if kind == "stratified":
        u = _uniform(1, generator, device)
        b = torch.arange(batch, dtype=torch.float64, device=device) / batch
        return t_min + (t_max - t_min) * torch.remainder(u + b, 1.0)
    if kind == "log_normal":
        n = torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
        rho = (p_mean + p_std * n).exp()
        t = sde.t_from_noise_level(rho.cpu()).to(device)
        return t.clamp(t_min, t_max)
    if kind == "importance":
        lam = sde.log_snr(torch.tensor([t_min, t_max], dtype=torch.float64))
        u = _uniform(batch, generator, device)
        lam_t = lam[0].to(device) + u * (lam[1] - lam[0]).to(device)
        t = sde.t_from_noise_level((-0.5 * lam_t).exp().cpu()).to(device)
        return t.clamp(t_min, t_max)
    raise ValueError(
        f"time_sampling must be one of 'uniform', 'stratified', 'log_normal', 'importance'; "
        f"got {kind!r}"
    )
