"""The log-SNR coefficients (:mod:`diffkit.samplers.log_snr`) against closed forms and
quadrature, and the first-order members of DPM-Solver++ / UniPC against DDIM on every SDE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad, quad_vec

from diffkit.samplers.ddim import DDIM
from diffkit.samplers.dpm_solver import DPMSolver
from diffkit.samplers.factors import noise_factor
from diffkit.samplers.gddim import GDDIM
from diffkit.samplers.log_snr import log_snr_steps, phi
from diffkit.samplers.unipc import UniPC
from diffkit.sdes.time_grids import time_grid

from .test_all_sdes import DATA_SHAPE, SDES, _data_cov, _sde


def _any_sde(name: str):
    if name == "subvp":
        from diffkit_example.sdes import SubVPSDE

        return SubVPSDE()
    return _sde(name)


ALL_SDES = [*SDES, "subvp"]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_phi_against_quadrature(k: int) -> None:
    hs = [1e-9, 1e-4, 0.3, 0.999, 1.0, 2.5, 40.0]
    got = phi(torch.tensor(hs, dtype=torch.float64), k)
    for h, q in zip(hs, got.tolist(), strict=True):
        ref, _ = quad(lambda x, h=h: math.exp(x - h) * (x / h) ** k, 0.0, h, epsrel=1e-14)
        assert abs(q - ref) <= 1e-13 * abs(ref), (h, q, ref)
    assert phi(torch.tensor([math.inf], dtype=torch.float64), k).item() == 1.0


def _run(sampler, sde, name, gaussian_score, *, noise=None):
    shape = (3, *DATA_SHAPE.get(name, (2,)))
    model = gaussian_score(sde, _data_cov(sde))
    gen = torch.Generator().manual_seed(0)
    u_T = sde.prior_sample((3, *sde.state_shape(shape[1:])), generator=gen, dtype=torch.float64)
    if noise is not None:
        draws = iter(noise)
        sampler.noise_source = lambda u: next(draws)
    return sampler.sample(model, sde, shape, u_T=u_T, dtype=torch.float64).u


@pytest.mark.parametrize("name", ALL_SDES)
def test_first_order_members_are_ddim(name: str, gaussian_score) -> None:
    """DPM-Solver++ order 1 and UniP-1 are DDIM (gDDIM's R-factor DDIM on CLD); the SDE
    variant of order 1 is DDIM with eta = 1 (the DDPM posterior) on 1x1-block SDEs."""
    sde = _any_sde(name)
    ref_cls = GDDIM if sde.block == 2 else DDIM
    ref = _run(ref_cls(7), sde, name, gaussian_score)
    scale = 1.0 + ref.abs().max().item()
    for sampler in (
        DPMSolver(7, grid="quadratic", order=1),
        UniPC(7, "quadratic", order=1, corrector=False),
    ):
        out = _run(sampler, sde, name, gaussian_score)
        assert (out - ref).abs().max().item() <= 1e-10 * scale
    if sde.block == 1:
        z = torch.randn(7, *ref.shape, generator=torch.Generator().manual_seed(1), dtype=ref.dtype)
        ref = _run(DDIM(7, eta=1.0), sde, name, gaussian_score, noise=z)
        sampler = DPMSolver(7, grid="quadratic", order=1, algorithm="sde-dpmsolver++")
        out = _run(sampler, sde, name, gaussian_score, noise=z)
        assert (out - ref).abs().max().item() <= 1e-10 * scale


def test_cld_moments_match_adaptive_quadrature() -> None:
    """``M_k = int_s^t R_s R_tau^{-1} 1/2 G G^T Sigma^{-1} A ((lambda - lambda_t)/h)^k dtau``
    (``lambda = -tau``);
    ``M_0`` is also ``A_s - R_s R_t^{-1} A_t`` in closed form."""
    sde = _sde("cld")
    times = time_grid(sde, 3, "log_snr")
    st = log_snr_steps(sde, times, 3)
    for i in range(3):
        t, s = float(times[i]), float(times[i + 1])
        lam_t, h = float(st.lam[i]), float(st.lam[i + 1] - st.lam[i])
        r_s = noise_factor(sde, torch.tensor([s], dtype=torch.float64), "R")

        def f(tau: float, r_s=r_s, lam_t=lam_t, h=h) -> np.ndarray:
            tt = torch.tensor([tau], dtype=torch.float64)
            g, k = sde.diffusion_op(tt), sde.kernel(tt)
            w = r_s @ noise_factor(sde, tt, "R").inv() @ (g @ g.T) @ k.cov.inv() @ k.mean_op
            x = (-tau - lam_t) / h  # lambda = -t on 2x2 blocks
            return np.concatenate([0.5 * w.coef[0].numpy().reshape(-1) * x**j for j in range(3)])

        ref, _ = quad_vec(f, s, t, epsabs=1e-14, epsrel=1e-12)
        ref = ref.reshape(3, 2, 2)
        for j in range(3):
            got = st.moments[j].coef[i].numpy()
            assert np.abs(got - ref[j]).max() <= 1e-9 * np.abs(ref[j]).max(), (i, j)


def test_unipc_bh1_into_zero_noise_needs_lower_order_final(gaussian_score) -> None:
    sde = _sde("vp")

    class ToZero(UniPC):
        def times(self, sde):
            return time_grid(sde, self.steps, "quadratic", t_min=0.0)

    with pytest.raises(ValueError, match="lower_order_final"):
        ToZero(6, order=2, solver_type="bh1", lower_order_final=False).plan(sde)
    ToZero(6, order=2, solver_type="bh1").plan(sde)  # the last step is first order: defined
