"""W2, Sinkhorn, Gaussian W2 and MMD against closed forms, direct POT calls and hand formulas."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import scipy.linalg
import torch

from diffkit.metrics.gaussian_w2 import GaussianW2, gaussian_w2, mean_cov, sqrtm_psd
from diffkit.metrics.mmd import MMD
from diffkit.metrics.wasserstein import W2, Sinkhorn


def _points(n: int, m: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.3 + 0.4
    return x, y


def _random_spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_gaussian_w2_matches_scipy_closed_form() -> None:
    d = 6
    c1, c2 = _random_spd(d, 1), _random_spd(d, 2)
    m1 = torch.linspace(-1, 1, d, dtype=torch.float64)
    m2 = torch.zeros(d, dtype=torch.float64)
    r1 = scipy.linalg.sqrtm(c1.numpy())
    cross = scipy.linalg.sqrtm(r1 @ c2.numpy() @ r1).real
    ref = float(((m1 - m2) ** 2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * cross)
    got = gaussian_w2(m1, c1, m2, c2)
    assert got.dtype == torch.float64
    assert abs(got.item() ** 2 - ref) < 1e-10 * max(1.0, ref)
    assert abs(gaussian_w2(m1, c1, m1, c1).item()) < 1e-6  # identical laws (sqrt of ~1e-14)
    r = sqrtm_psd(c1)
    assert torch.allclose(r @ r, c1, atol=1e-12)


def test_gaussian_w2_commuting_case_by_hand() -> None:
    # Covariances diagonal in the same rotated basis: W2^2 = |dm|^2 + sum (sqrt(l) - sqrt(m))^2.
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(3)).double())
    l1 = torch.tensor([4.0, 1.0, 0.25], dtype=torch.float64)
    l2 = torch.tensor([1.0, 9.0, 0.25], dtype=torch.float64)
    c1, c2 = q @ torch.diag(l1) @ q.T, q @ torch.diag(l2) @ q.T
    m1 = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    m2 = torch.tensor([1.0, 0.0, 3.0], dtype=torch.float64)
    # by hand: |dm|^2 = 4; (2-1)^2 + (1-3)^2 + 0 = 5  ->  W2 = 3
    assert abs(gaussian_w2(m1, c1, m2, c2).item() - 3.0) < 1e-12


def test_gaussian_w2_metric_against_target_and_reference() -> None:
    x, y = _points(400, 300, 3)
    metric = GaussianW2()
    metric.update(x[:150], y[:100])
    metric.update(x[150:], y[100:])
    out = metric.compute()
    mx, cx = mean_cov(x)
    my, cy = mean_cov(y)
    assert torch.allclose(out["value"], gaussian_w2(mx, cx, my, cy), atol=1e-12)
    assert out["n"].item() == 400 and out["n_reference"].item() == 300

    target = GaussianW2(mean=[0.0, 0.0, 0.0], cov=torch.eye(3).tolist())
    target.update(x)
    got = target.compute()
    assert torch.allclose(got["value"], gaussian_w2(mx, cx, torch.zeros(3), torch.eye(3)))
    assert got["n"].item() == 400


def test_w2_matches_direct_pot_call() -> None:
    x, y = _points(300, 200, 5)
    metric = W2()
    metric.update(x, y)
    out = metric.compute()
    ref = math.sqrt(
        ot.emd2(ot.unif(300), ot.unif(200), ot.dist(x.numpy(), y.numpy()), numItermax=2_000_000)
    )
    assert abs(out["value"].item() - ref) < 1e-10
    assert out["sliced"].item() == 0 and out["n"].item() == 300


def test_w2_of_shifted_point_cloud_is_the_shift() -> None:
    # Translating a point set by a vector s moves it by exactly |s| in W2.
    x, _ = _points(200, 1, 3)
    shift = torch.tensor([0.3, -0.4, 0.0], dtype=torch.float64)
    metric = W2()
    metric.update(x + shift, x)
    assert abs(metric.compute()["value"].item() - 0.5) < 1e-9


def test_w2_falls_back_to_sliced_beyond_max_exact() -> None:
    x, y = _points(120, 120, 4)
    metric = W2(max_exact=100, n_projections=64, seed=3)
    metric.update(x, y)
    out = metric.compute()
    ref = ot.sliced_wasserstein_distance(x, y, n_projections=64, p=2, seed=3)
    assert out["sliced"].item() == 1
    assert abs(out["value"].item() - float(ref)) < 1e-10


@pytest.mark.parametrize(("reg", "solver"), [(0.05, "sinkhorn"), (0.005, "sinkhorn_log")])
def test_sinkhorn_cost_matches_direct_pot_call(reg: float, solver: str) -> None:
    x, y = _points(150, 120, 3)
    metric = Sinkhorn(reg=reg)
    assert metric.solver == solver
    metric.update(x, y)
    out = metric.compute()
    m = ot.dist(x.numpy(), y.numpy())
    ref = (
        ot.sinkhorn2(ot.unif(150), ot.unif(120), m / m.max(), reg, method=solver, numItermax=10_000)
        * m.max()
    )
    assert abs(out["value"].item() - float(ref)) < 1e-8 * float(ref)
    # entropic plan cost >= exact OT cost
    w2sq = ot.emd2(ot.unif(150), ot.unif(120), m, numItermax=2_000_000)
    assert out["value"].item() >= w2sq - 1e-9


def test_sinkhorn_divergence_matches_pot_and_vanishes_on_identical_sets() -> None:
    x, y = _points(100, 80, 2)
    metric = Sinkhorn(reg=0.05, kind="divergence")
    metric.update(x, y)
    got = metric.compute()["value"].item()
    s = float(ot.dist(x.numpy(), y.numpy()).max())
    ref = ot.bregman.empirical_sinkhorn_divergence(
        x.numpy() / math.sqrt(s), y.numpy() / math.sqrt(s), 0.05, numIterMax=10_000
    )
    assert abs(got - float(ref) * s) < 1e-8 * abs(float(ref) * s)
    same = Sinkhorn(reg=0.05, kind="divergence")
    same.update(x, x)
    assert abs(same.compute()["value"].item()) < 1e-10


def test_mmd_unbiased_by_hand_and_median_bandwidth() -> None:
    x, y = _points(60, 50, 2)
    metric = MMD(bandwidth=0.7)
    metric.update(x, y)
    out = metric.compute()
    xn, yn = x.numpy(), y.numpy()

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * 0.7**2))

    kxx, kyy, kxy = k(xn, xn), k(yn, yn), k(xn, yn)
    ref = (
        (kxx.sum() - np.trace(kxx)) / (60 * 59)
        + (kyy.sum() - np.trace(kyy)) / (50 * 49)
        - 2 * kxy.mean()
    )
    assert abs(out["value"].item() - ref) < 1e-12
    med = MMD()
    med.update(x, y)
    z = np.concatenate([xn, yn])
    dist = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(110, 1)]
    # torch's median takes the lower of the two middle values
    assert abs(med.compute()["bandwidth"].item() - np.sort(dist)[(dist.size - 1) // 2]) < 1e-12


def test_mmd_of_shifted_gaussians_matches_closed_form() -> None:
    # N(0, I) vs N(delta, I) in d = 2, h = 1: MMD^2 = 2 c (1 - exp(-|delta|^2 / (2 (h^2 + 2)))),
    # c = (h^2 / (h^2 + 2))^{d/2} = 1/3, |delta|^2 = 2  ->  2/3 (1 - e^{-1/3}) = 0.1776.
    g = torch.Generator().manual_seed(5)
    a, b, c = (torch.randn(1000, 2, generator=g, dtype=torch.float64) for _ in range(3))
    same, shifted = MMD(bandwidth=1.0), MMD(bandwidth=1.0)
    same.update(a, b)
    shifted.update(a, c + 1.0)
    v_same, v_shift = same.compute()["value"].item(), shifted.compute()["value"].item()
    exact = 2.0 / 3.0 * (1.0 - math.exp(-1.0 / 3.0))
    assert abs(v_same) < 0.01
    assert abs(v_shift - exact) < 0.035  # ~4 Monte-Carlo standard deviations at n = 1000


def test_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="reg"):
        Sinkhorn(reg=0.0)
    with pytest.raises(ValueError, match="kind"):
        Sinkhorn(kind="entropic")  # type: ignore[arg-type]
    w = W2()
    w.update(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="dimensions"):
        w.compute()
