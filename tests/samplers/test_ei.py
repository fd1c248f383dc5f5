"""The exponential-integrator SDE sampler (``ei``,
docs/background/samplers.md#exponential-integrator) against closed forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from diffkit.registry.builtins import BUILTINS
from diffkit.samplers.exponential_integrator import ExponentialIntegrator, ei_coefficients
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.operators import LinearOp
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE


def _grid(n: int, t_min: float) -> torch.Tensor:
    return torch.linspace(1.0, t_min, n + 1, dtype=torch.float64)


def test_vp_coefficients_are_pierret_galerne_closed_form() -> None:
    """VP, lam = 1: x_s = e^dB x_t + 2 (e^dB - 1) s + sqrt(e^{2 dB} - 1) z, e^dB = a_s / a_t."""
    sde, times = VPSDE(), _grid(7, 1e-3)
    c = ei_coefficients(sde, times, 1.0)
    r = sde.alpha(times[1:]) / sde.alpha(times[:-1])
    torch.testing.assert_close(c["A"].coef.reshape(-1), r, rtol=1e-13, atol=0)
    torch.testing.assert_close(c["B"].coef.reshape(-1), 2 * (r - 1), rtol=1e-12, atol=0)
    torch.testing.assert_close(c["C"].coef.reshape(-1), (r**2 - 1).sqrt(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0])
def test_ve_coefficients_closed_form(lam: float) -> None:
    """VE (F = 0): D = sigma_t^2 - sigma_s^2 = Q, A = I."""
    sde = VESDE()
    times = torch.linspace(1.0, 1e-3, 6, dtype=torch.float64)
    c = ei_coefficients(sde, times, lam)
    d = sde.sigma(times[:-1]) ** 2 - sde.sigma(times[1:]) ** 2
    torch.testing.assert_close(c["B"].coef.reshape(-1), 0.5 * (1 + lam**2) * d, rtol=1e-10, atol=0)
    if lam > 0:
        torch.testing.assert_close(c["C"].coef.reshape(-1), lam * d.sqrt(), rtol=1e-10, atol=0)
    else:
        assert "C" not in c


def test_cld_noise_covariance_is_the_reverse_transition_integral() -> None:
    """2x2 blocks: Q = int Psi(s,tau) G G^T Psi(s,tau)^T dtau by slow quadrature."""
    sde = CLDSDE()
    times = torch.tensor([0.6, 0.35], dtype=torch.float64)
    c = ei_coefficients(sde, times, 1.0)
    q = c["C"].coef[0] @ c["C"].coef[0].mT
    tau = torch.linspace(0.35, 0.6, 4001, dtype=torch.float64)
    g = sde.diffusion_op(tau)
    psi = sde.transition(torch.full_like(tau, 0.35), tau)
    f = (psi @ (g @ g.T) @ psi.T).coef.reshape(len(tau), 2, 2)
    ref = torch.trapezoid(f, tau, dim=0)
    torch.testing.assert_close(q.reshape(2, 2), ref, rtol=1e-6, atol=1e-9)
    d = torch.trapezoid((psi @ (g @ g.T)).coef.reshape(len(tau), 2, 2), tau, dim=0)
    torch.testing.assert_close(c["B"].coef.reshape(2, 2), d, rtol=1e-6, atol=1e-9)


def _output_variance(sampler, sde, model, lam: torch.Tensor, v0: torch.Tensor) -> torch.Tensor:
    """Exact output variance per coordinate (row 0: the linear map, row 1: the noise)."""
    d = lam.numel()
    reset = torch.stack([torch.ones(d), torch.zeros(d)]).to(torch.float64)
    z = torch.stack([torch.zeros(d), torch.ones(d)]).to(torch.float64)
    v = [v0.clone()]

    def on_step(i: int, u: torch.Tensor) -> None:
        v[0] = u[0] ** 2 * v[0] + u[1] ** 2
        u.copy_(reset)

    sampler.noise_source = lambda u: z
    sampler.sample(model, sde, (2, d), u_T=reset.clone(), dtype=torch.float64, callback=on_step)
    return v[0]


def test_variance_equals_pierret_galerne_recurrence(gaussian_score) -> None:
    """v <- (1 + g1 (1 - 2/L))^2 v + 2 g2 (docs/background/samplers.md#pierret-galerne) on N(0, diag
    lam) data."""
    sde = VPSDE()
    lam = torch.tensor([1e-3, 0.05, 0.7, 4.0], dtype=torch.float64)
    model = gaussian_score(sde, LinearOp.diagonal(lam[None]))
    n, eps = 30, 1e-3
    sampler = ExponentialIntegrator(n, grid="uniform", t_min=eps)
    got = _output_variance(sampler, sde, model, lam, torch.ones(4, dtype=torch.float64))
    times = _grid(n, eps)
    v = torch.ones(4, dtype=torch.float64)
    for t, s in itertools.pairwise(times):
        e = float(sde.alpha(s) / sde.alpha(t))  # e^{B_t - B_s}, PG's B
        big_l = sde.alpha(t) ** 2 * lam + sde.sigma(t) ** 2
        v = (1 + (e - 1) * (1 - 2 / big_l)) ** 2 * v + (e**2 - 1)
    torch.testing.assert_close(got, v, rtol=1e-11, atol=0)


@pytest.mark.parametrize(("lam", "final"), [(1.0, False), (0.0, True)])
def test_nfe_count(lam: float, final: bool, gaussian_score) -> None:
    sde = VPSDE()
    model = gaussian_score(sde, LinearOp.scalar(0.5))
    sampler = ExponentialIntegrator(13, lam=lam, denoise_final=final)
    res = sampler.sample(model, sde, (5, 3), generator=torch.Generator().manual_seed(0))
    assert res.nfe == 13 + int(final) == sampler.expected_nfe()
    assert res.x.shape == (5, 3) and torch.isfinite(res.x).all()


def test_first_order_convergence_from_exact_p_T(gaussian_score) -> None:
    """Started at the exact p_T with t_min = 0, W2 to the data decays like 1/N (slope -1)."""
    sde = VPSDE()
    lam = torch.tensor([0.02, 0.3, 1.0, 3.0], dtype=torch.float64)
    model = gaussian_score(sde, LinearOp.diagonal(lam[None]))
    v_T = sde.alpha(1.0) ** 2 * lam + sde.sigma(1.0) ** 2
    ns, errs = [40, 80, 160], []
    for n in ns:
        v = _output_variance(
            ExponentialIntegrator(n, grid="uniform", t_min=0.0), sde, model, lam, v_T
        )
        errs.append(float(((v.sqrt() - lam.sqrt()) ** 2).sum().sqrt()))
    slope = math.log(errs[-1] / errs[0]) / math.log(ns[-1] / ns[0])
    assert -1.15 < slope < -0.85, (errs, slope)


def test_registered_as_ei() -> None:
    assert BUILTINS["sampler"]["ei"] == (
        "diffkit.samplers.exponential_integrator:ExponentialIntegrator"
    )


def test_negative_lam_is_rejected() -> None:
    with pytest.raises(ValueError, match="lam"):
        ExponentialIntegrator(10, lam=-1.0)
