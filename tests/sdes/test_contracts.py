"""Every built-in SDE configuration through the public contract harness
(docs/background/sdes.md#testing-kernels)."""

from __future__ import annotations

import pytest
import torch

from diffkit.sdes.vp import VPSDE
from diffkit.testing.contracts import (
    SDEContract,
    check_dtype_policy,
    check_kernel_ode,
    check_monte_carlo,
    check_noise_level,
    check_pickle,
    check_semigroup,
)

from .conftest import SDE_CASES

NAMES = list(SDE_CASES)


@pytest.mark.parametrize("name", NAMES)
def test_kernel_matches_mean_and_lyapunov_odes(name: str) -> None:
    make, shape, breaks = SDE_CASES[name]
    sde = make()
    T = sde.T
    errs = check_kernel_ode(sde, shape, [1e-3 * T, 0.1 * T, 0.5 * T, T], breakpoints=breaks)
    assert len(errs) == 12


@pytest.mark.parametrize("name", NAMES)
def test_semigroup_and_chapman_kolmogorov(name: str) -> None:
    make, shape, breaks = SDE_CASES[name]
    sde = make()
    T = sde.T
    check_semigroup(sde, shape, 0.9 * T, 0.45 * T, 0.15 * T, breakpoints=breaks)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_monte_carlo_euler_maruyama(name: str) -> None:
    make, shape, _ = SDE_CASES[name]
    sde = make()
    g = torch.Generator().manual_seed(3)
    u0 = sde.lift(torch.randn((1, *shape), generator=g, dtype=torch.float64), generator=g)[0]
    paths = 4000 if len(shape) > 1 else 10000
    errs = check_monte_carlo(sde, u0, 0.5 * sde.T, paths=paths, steps=100, generator=g)
    assert errs["mean_max_se"] < 4.5


@pytest.mark.parametrize("name", NAMES)
def test_pickle_dtype_and_noise_level(name: str) -> None:
    make, shape, _ = SDE_CASES[name]
    sde = make()
    check_pickle(sde, 0.5 * sde.T)
    check_dtype_policy(sde, shape, 0.5 * sde.T)
    check_noise_level(sde)


def test_monte_carlo_check_detects_a_wrong_kernel() -> None:
    """The harness must fail on an SDE whose kernel disagrees with its drift (factor-2 beta)."""

    class WrongVP(VPSDE):
        def drift_op(self, t):  # Pierret-Galerne drift with Song's diffusion: inconsistent
            return super().drift_op(t) * 2.0

    sde = WrongVP()
    with pytest.raises(AssertionError, match="Lyapunov"):
        check_kernel_ode(sde, (2,), [0.5])
    with pytest.raises(AssertionError, match="Monte Carlo"):
        check_monte_carlo(sde, torch.ones(2), 0.5, paths=4000, steps=50)


class TestVPContract(SDEContract):
    """The pytest base class, as a plugin author would use it."""

    make_sde = VPSDE
    data_shape = (2,)
    mc_paths = 4000
    mc_steps = 50
