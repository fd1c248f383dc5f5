"""CLD closed forms: reference table, overflow safety, transition, gDDIM's R factor
(docs/background/sdes.md#cld)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from diffkit.sdes.cld import CLDSDE


def test_reference_table() -> None:
    sde = CLDSDE(numerical_eps=0.0)
    t = torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64)
    cov = sde.covariance(t, 0.0, sde.gamma * sde.M)
    expect = torch.tensor(
        [
            [0.22181006, 0.12985984, 0.21575835, 2.67518145],
            [0.98646073, 0.00528689, 0.24793355, 2.00843217],
            [0.99998397, 7.0762e-6, 0.24999688, 2.00001250],
        ],
        dtype=torch.float64,
    )
    got = torch.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1], sde.ell(t)], -1)
    assert torch.allclose(got, expect, rtol=1e-7, atol=5e-9)
    # hsm kernel without eps is exactly this covariance; its Cholesky L_vv = 1 / ell
    k = sde.kernel(t)
    assert torch.allclose(k.cov.coef, cov, rtol=1e-15)
    assert torch.allclose(1.0 / k.scale.coef[:, 1, 1], sde.ell(t), rtol=1e-12)


def test_stationary_limit_and_prior() -> None:
    sde = CLDSDE(beta0=60.0)
    cov = sde.kernel(1.0).cov.coef[0]
    assert torch.allclose(cov, sde.prior_cov().coef[0], atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_overflow_safe_at_large_integrated_beta(dtype: torch.dtype) -> None:
    """4 g B ~ 1000 (float64) / ~ 100 (float32 time inputs): the printed forms give NaN."""
    beta0 = 250.0 if dtype == torch.float64 else 25.0
    sde = CLDSDE(beta0=beta0)
    t = torch.tensor([0.5, 1.0], dtype=dtype)
    k = sde.kernel(t)
    for op in (k.cov, k.scale, k.mean_op):
        assert op.coef.dtype == torch.float64 and torch.isfinite(op.coef).all()
    assert torch.allclose(k.cov.coef[-1], sde.prior_cov().coef[0], atol=1e-12)
    assert torch.isfinite(sde.ell(t)).all() and torch.isfinite(sde.noise_level(t)).all()


def test_transition_is_matrix_exponential_and_semigroup() -> None:
    sde = CLDSDE(beta1=3.0)
    abar = torch.tensor([[0.0, sde.m_inv], [-1.0, -sde.Gamma * sde.m_inv]], dtype=torch.float64)
    t, s, r = (torch.tensor([v], dtype=torch.float64) for v in (0.9, 0.4, 0.1))
    b = sde.integrated_beta(t, s)
    psi = sde.transition(t, s).coef[0]
    assert torch.allclose(psi, torch.linalg.matrix_exp(abar * b), atol=1e-15, rtol=0)
    comp = (sde.transition(t, s) @ sde.transition(s, r)).coef
    assert torch.allclose(comp, sde.transition(t, r).coef, atol=1e-15, rtol=0)
    back = (sde.transition(s, t) @ sde.transition(t, s)).coef
    assert torch.allclose(back, torch.eye(2, dtype=torch.float64)[None], atol=1e-14)


@pytest.mark.parametrize("mode", ["hsm", "dsm"])
def test_kernel_factor_r(mode: str) -> None:
    """R R^T = Sigma, and R solves dR/dt = (F + 1/2 G G^T Sigma^{-1}) R from R_0 (LSODA; the
    ODE is stiff near 0, where Sigma_xx ~ eps)."""
    sde = CLDSDE(kernel=mode)
    times = [1e-4, 0.05, 0.5, 1.0]
    r = sde.kernel_factor_R(torch.tensor(times, dtype=torch.float64))
    assert torch.allclose((r @ r.T).coef, sde.kernel(torch.tensor(times)).cov.coef, atol=1e-14)

    a_bar = sde.drift_op(0.0).coef[0].numpy() / sde.beta0

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        beta = sde.beta0 + sde.beta1 * t
        ggt = np.diag([0.0, 2.0 * sde.Gamma * beta])
        sig = sde.kernel(t).cov.coef[0].numpy()
        return ((a_bar * beta + 0.5 * ggt @ np.linalg.inv(sig)) @ y.reshape(2, 2)).ravel()

    c = sde.gamma * sde.M if mode == "hsm" else 0.0
    r0 = np.diag([np.sqrt(sde.numerical_eps), np.sqrt(c + sde.numerical_eps)])
    sol = solve_ivp(rhs, (0.0, 1.0), r0.ravel(), method="LSODA", rtol=1e-12, atol=1e-15,
                    t_eval=times)  # fmt: skip
    ref = torch.as_tensor(sol.y.T.reshape(-1, 2, 2))
    assert torch.allclose(r.coef, ref, atol=2e-8, rtol=0)
    assert torch.allclose(sde.kernel_factor_R(0.0).coef[0], torch.as_tensor(r0), atol=1e-15)


def test_lift_project() -> None:
    x0 = torch.randn(10000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    hsm, dsm = CLDSDE(kernel="hsm"), CLDSDE(kernel="dsm")
    u = hsm.lift(x0)
    assert u.shape == (10000, 2, 3) and (u[:, 1] == 0).all() and (hsm.project(u) == x0).all()
    v = dsm.lift(x0, generator=torch.Generator().manual_seed(1))[:, 1]
    var = dsm.gamma * dsm.M
    se = var * (2.0 / v.numel()) ** 0.5
    assert abs(v.var().item() - var) < 4 * se


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="m_inv"):
        CLDSDE(m_inv=0.0)
    with pytest.raises(ValueError, match="beta0"):
        CLDSDE(beta0=-1.0)
    with pytest.raises(ValueError, match="numerical_eps"):
        CLDSDE(numerical_eps=-1e-9)
    with pytest.raises(ValueError, match="numerical_eps"):
        CLDSDE(numerical_eps=0.0).kernel_factor_R(0.5)
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        CLDSDE().kernel_factor_R(1.5)


def test_r_table_buffers_survive_dtype_moves_and_pickling() -> None:
    import copy
    import pickle

    sde = CLDSDE()
    t = torch.tensor([0.003, 0.4], dtype=torch.float64)
    ref = sde.kernel_factor_R(t).coef
    assert sde._r_theta.dtype == torch.float64 and sde._r_theta.numel() > 0
    assert not any(k.startswith("_r_") for k in sde.state_dict())  # non-persistent
    for other in (copy.deepcopy(sde).to(torch.float32), pickle.loads(pickle.dumps(sde))):
        assert other._r_theta.dtype == torch.float64 and other._r_nodes.dtype == torch.float64
        assert torch.equal(other.kernel_factor_R(t).coef, ref)
