"""The diffusers comparison of tools/bench_samplers.py (benchmark-only extra ``bench``).

Cross-checks of the exact-W2 machinery on the discrete DDPM schedule: diffusers' DDIM with
trailing spacing walks exactly diffkit's uniform grid on ``VPSDE(schedule="ddpm", t_min=0)``,
so both must give the same W2; and the scheduler's linear map equals a random-input run.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from diffkit.gaussian import GaussianScore, Modes, cifar10_spectrum, data_cov, propagate, w2_to_data
from diffkit.samplers.ddim import DDIM
from diffkit.sdes.vp import VPSDE

pytest.importorskip("diffusers")
_PATH = Path(__file__).resolve().parents[2] / "tools" / "bench_samplers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_samplers", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_diffusers_ddim_w2_equals_diffkit_ddim_on_ddpm_schedule(bench) -> None:
    lam = cifar10_spectrum()
    row = bench.run_diffusers("ddim", 10, lam)
    assert row["nfe"] == 10
    sde = VPSDE(schedule="ddpm", t_min=0.0)
    modes = Modes(sde, (lam.numel(),))
    model = GaussianScore(sde, data_cov(sde, lam))
    start = torch.ones(modes.n, 1, 1, dtype=torch.float64)
    cov, nfe = propagate(DDIM(10, grid="uniform"), sde, model, start, modes)
    ours = w2_to_data(lam, cov)
    assert nfe == 10
    assert abs(ours - row["w2"]) < 1e-3 * ours, (ours, row["w2"])  # float32 scheduler tables


def test_eps_model_is_exact_at_integer_timesteps(bench) -> None:
    """eps(x, i) = sqrt(1 - ab_i) x / (ab_i lam + 1 - ab_i) equals diffkit's exact eps."""
    lam = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    eps_model = bench.DiffusersEpsModel(lam)
    sde = VPSDE(schedule="ddpm")
    score = GaussianScore(sde, data_cov(sde, lam))
    x = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    for i in (0, 137, 999):
        ref = score(x, torch.tensor([(i + 1) / 1000], dtype=torch.float64)).eps()
        torch.testing.assert_close(eps_model(x, i), ref, rtol=1e-10, atol=1e-12)
