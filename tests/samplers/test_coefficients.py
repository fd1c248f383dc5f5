"""DEIS/gDDIM coefficients against adaptive quadrature, and their closed-form reductions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from diffkit.samplers.ddim import ddim_coefficients
from diffkit.samplers.exponential import exponential_coefficients
from diffkit.samplers.gddim import stochastic_gddim_coefficients
from diffkit.sdes.time_grids import time_grid
from diffkit.sdes.vp import VPSDE


def _scalar_reference(sde, times, order, variant, i, j) -> float:
    """C_ij = int_t^s 1/2 Psi(s, tau) g^2 / sigma_tau l_j(tau) dtau, by scipy.integrate.quad."""
    t, s = float(times[i]), float(times[i + 1])
    q = min(order, i)
    var = (lambda x: x) if variant == "tab" else (lambda x: float(sde.noise_level(x)))
    nodes = [var(float(times[i - k])) for k in range(q + 1)]
    if j > q:
        return 0.0

    def f(tau: float) -> float:
        x = var(tau)
        ell = np.prod([(x - nodes[k]) / (nodes[j] - nodes[k]) for k in range(q + 1) if k != j])
        psi = float(sde.transition(s, tau).coef[0, 0, 0])
        g2 = float(sde.beta(tau))
        return 0.5 * psi * g2 / float(sde.sigma(tau)) * ell

    val, _ = quad(f, s, t, epsabs=1e-14, epsrel=1e-13, limit=200)
    return -val


@pytest.mark.parametrize("variant", ["tab", "rhoab"])
def test_deis_coefficients_match_adaptive_quadrature(variant: str) -> None:
    sde = VPSDE()
    times = time_grid(sde, 6, "quadratic")
    order = 3
    c = exponential_coefficients(sde, times, order, variant=variant)
    for i in range(len(times) - 1):
        for j in range(order + 1):
            ref = _scalar_reference(sde, times, order, variant, i, j)
            got = float(c["C"][j].coef[i, 0, 0])
            assert abs(got - ref) <= 1e-10 * max(1.0, abs(ref)), (i, j, got, ref)


@pytest.mark.parametrize("t_min", [1e-3, 0.0])
def test_order_zero_is_ddim(t_min: float) -> None:
    sde = VPSDE()
    times = time_grid(sde, 12, "quadratic", t_min=t_min)
    c = exponential_coefficients(sde, times, 0)
    d = ddim_coefficients(sde, times, 0.0)
    torch.testing.assert_close(c["A"].coef, d["A"].coef, rtol=0, atol=1e-14)
    torch.testing.assert_close(c["C"][0].coef, d["B"].coef, rtol=0, atol=1e-12)


def test_rhoab_closed_form_polynomial_integral() -> None:
    """rhoAB on VP: C_ij = alpha_s int_{rho_t}^{rho_s} l_j(rho) d rho
    (docs/background/samplers.md#deis)."""
    sde = VPSDE()
    times = time_grid(sde, 5, "log_snr")
    c = exponential_coefficients(sde, times, 2, variant="rhoab")
    rho = sde.noise_level(times).numpy()
    alpha = sde.alpha(times).numpy()
    for i in range(len(times) - 1):
        q = min(2, i)
        nodes = [rho[i - k] for k in range(q + 1)]
        for j in range(q + 1):
            poly = np.poly1d([1.0])
            for k in range(q + 1):
                if k != j:
                    poly = poly * np.poly1d([1.0, -nodes[k]]) / (nodes[j] - nodes[k])
            anti = poly.integ()
            ref = alpha[i + 1] * (anti(rho[i + 1]) - anti(rho[i]))
            got = float(c["C"][j].coef[i, 0, 0])
            assert abs(got - ref) < 1e-11 * max(1.0, abs(ref)), (i, j, got, ref)


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_stochastic_gddim_integrated_equals_closed_form(lam: float) -> None:
    """The RK4-integrated Psihat (the 2x2-block code path) reproduces the scalar closed form."""
    sde = VPSDE()
    times = time_grid(sde, 8, "quadratic")
    a = stochastic_gddim_coefficients(sde, times, lam)
    b = stochastic_gddim_coefficients(sde, times, lam, closed_form=False, substeps=300)
    for k in "ABC":
        torch.testing.assert_close(a[k].coef, b[k].coef, rtol=1e-8, atol=1e-10)


def test_stochastic_gddim_lambda_one_is_ddpm_posterior() -> None:
    sde = VPSDE()
    times = time_grid(sde, 8, "quadratic")
    a = stochastic_gddim_coefficients(sde, times, 1.0)
    d = ddim_coefficients(sde, times, 1.0)
    for k in "ABC":
        torch.testing.assert_close(a[k].coef, d[k].coef, rtol=1e-12, atol=1e-14)
