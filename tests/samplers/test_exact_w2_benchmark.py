"""The exact-W2 machinery of tools/bench_samplers.py: Pierret-Galerne's published table (the
first regression test of docs/background/samplers.md#pierret-galerne) and a cross-check of the
step-wise propagation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.sdes.vp import VPSDE

_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench_samplers.py"


@pytest.fixture(scope="module")
def bench():
    if not _PATH.exists() or not Path("/work/shared/data/cifar10_cov_eigenvalues.npy").exists():
        pytest.skip("tools/bench_samplers.py or the CIFAR-10 spectrum is not available")
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
    lam = bench.cifar_spectrum()
    sde = VPSDE()
    modes = bench.Modes(sde, (lam.numel(),))
    model = bench.LinearGaussianScore(sde, bench.data_cov(sde, lam))
    published = bench.PG_TABLE[(scheme, eps)][50][0]
    start = torch.ones(lam.numel(), 1, 1, dtype=torch.float64)  # N(0, I)
    cov, nfe = bench.propagate(bench.pg_sampler(scheme, 50, eps), sde, model, start, modes)
    assert nfe == (98 if scheme == "heun" else 49)
    assert abs(bench.w2_to_data(lam, cov) - published) <= 0.01


def test_stepwise_propagation_matches_batched_noise_rows(bench, exact_variance) -> None:
    """The callback/reset propagation equals the all-noise-rows computation of the same loop."""
    sde = VPSDE()
    lam = torch.tensor([0.05, 0.5, 2.0], dtype=torch.float64)
    modes = bench.Modes(sde, (3,))
    model = bench.LinearGaussianScore(sde, bench.data_cov(sde, lam))
    start = torch.full((3, 1, 1), 0.7, dtype=torch.float64)
    steps = 12
    cov, _ = bench.propagate(EulerMaruyama(steps), sde, model, start, modes)
    start_var = torch.full((3,), 0.7, dtype=torch.float64)
    out_var, _ = exact_variance(EulerMaruyama(steps), model, sde, start_var, steps)
    torch.testing.assert_close(cov[:, 0, 0], out_var, rtol=1e-12, atol=1e-14)
