"""The exact-W2 machinery of tools/bench_samplers.py: Pierret-Galerne's published table (the
first regression test of docs/background/samplers.md#pierret-galerne) and a cross-check of the
step-wise propagation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffkit.gaussian import GaussianScore, Modes, cifar10_spectrum, data_cov, propagate, w2_to_data
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.sdes.vp import VPSDE

_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench_samplers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheme", "eps"),
    [
        ("em", 0.0),
        ("em", 1e-3),
        ("ei", 0.0),
        ("ei", 1e-2),
        ("euler", 0.0),
        ("euler", 1e-2),
        ("heun", 0.0),
        ("heun", 1e-3),
    ],
)
def test_pierret_galerne_table_at_50_points(bench, scheme: str, eps: float) -> None:
    """N = 50 grid points, CIFAR-10 spectrum, VP: every published cell within +-0.01."""
    lam = cifar10_spectrum()
    sde = VPSDE()
    modes = Modes(sde, (lam.numel(),))
    model = GaussianScore(sde, data_cov(sde, lam))
    published = bench.PG_TABLE[(scheme, eps)][50][0]
    start = torch.ones(lam.numel(), 1, 1, dtype=torch.float64)  # N(0, I)
    cov, nfe = propagate(bench.pg_sampler(scheme, 50, eps), sde, model, start, modes)
    assert nfe == (98 if scheme == "heun" else 49)
    assert abs(w2_to_data(lam, cov) - published) <= 0.01


def test_stepwise_propagation_matches_batched_noise_rows(bench, exact_variance) -> None:
    """The callback/reset propagation equals the all-noise-rows computation of the same loop."""
    sde = VPSDE()
    lam = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)
    modes = Modes(sde, (3,))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = torch.full((3, 1, 1), 0.7, dtype=torch.float64)
    steps = 12
    cov, _ = propagate(EulerMaruyama(steps), sde, model, start, modes)
    start_var = torch.full((3,), 0.7, dtype=torch.float64)
    out_var, _ = exact_variance(EulerMaruyama(steps), model, sde, start_var, steps)
    torch.testing.assert_close(cov[:, 0, 0], out_var, rtol=1e-12, atol=1e-14)


def test_noise_row_propagation_of_multistep_sde_solver_equals_direct_runs(bench) -> None:
    """SDE-DPM-Solver++ 2M reuses earlier model outputs, so its noise cannot be propagated step
    by step; the noise-row propagation's responses reproduce direct runs on random starts and
    random noise, and on a one-step stochastic sampler it equals the step-wise propagation."""
    from diffkit.samplers.dpm_solver import DPMSolver

    sde = VPSDE()
    lam = torch.tensor([0.02, 0.4, 1.5, 3.0], dtype=torch.float64)
    modes = Modes(sde, (4,))
    model = GaussianScore(sde, data_cov(sde, lam))
    steps = 5
    sampler = DPMSolver(steps, order=2, algorithm="sde-dpmsolver++")
    start = torch.full((4, 1, 1), 0.8, dtype=torch.float64)
    cov, nfe = bench.propagate_noise_rows(sampler, sde, model, start, modes)
    assert nfe == steps

    # A direct run on random starts and random noise equals the responses to unit inputs
    # (one run per input) combined with the same draws: the loop is linear in both.
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    z = torch.randn(steps + 1, 3, 4, generator=gen, dtype=torch.float64)
    draws = iter(z)
    sampler.noise_source = lambda u: next(draws)
    out = sampler.sample(model, sde, (3, 4), u_T=g.clone(), dtype=torch.float64).u
    sampler.noise_source = None
    # responses: unit start and unit noise per draw (one eigendirection per column)
    resp = []
    for j in range(steps + 2):
        u0 = torch.ones(1, 4, dtype=torch.float64) if j == 0 else torch.zeros(1, 4)
        seq = iter(
            [torch.ones(1, 4, dtype=torch.float64) if i + 1 == j else torch.zeros(1, 4)]
            for i in range(steps + 1)
        )
        sampler.noise_source = lambda u, s=seq: next(s)[0].to(torch.float64)
        resp.append(sampler.sample(model, sde, (1, 4), u_T=u0.double(), dtype=torch.float64).u[0])
        sampler.noise_source = None
    resp = torch.stack(resp)  # (1 + draws, modes)
    expected = g * resp[0] + torch.einsum("jbn,jn->bn", z, resp[1:])
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    var = 0.8 * resp[0] ** 2 + (resp[1:] ** 2).sum(0)
    torch.testing.assert_close(cov[:, 0, 0], var, rtol=1e-12, atol=1e-14)

    em_rows, _ = bench.propagate_noise_rows(EulerMaruyama(steps), sde, model, start, modes)
    em_steps, _ = propagate(EulerMaruyama(steps), sde, model, start, modes)
    torch.testing.assert_close(em_rows, em_steps, rtol=1e-12, atol=1e-14)
