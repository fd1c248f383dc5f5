"""Time grids: decreasing, exact end points, and each kind's defining property."""

from __future__ import annotations

import pytest
import torch

from diffkit.sdes.time_grids import GRID_KINDS, time_grid
from diffkit.sdes.vp import VPSDE


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_grid_is_decreasing_float64_with_exact_ends(kind: str) -> None:
    sde = VPSDE()
    t = time_grid(sde, 17, kind, t_min=1e-3)
    assert t.dtype == torch.float64 and t.shape == (18,)
    assert t[0].item() == sde.T and t[-1].item() == 1e-3
    assert bool((t[1:] < t[:-1]).all())


def test_each_kind_is_uniform_in_its_own_variable() -> None:
    sde = VPSDE()
    t = time_grid(sde, 10, "quadratic", t_min=1e-3)
    assert torch.diff(t.sqrt()).std() < 1e-12
    t = time_grid(sde, 10, "log_snr", t_min=1e-3)
    assert torch.diff(sde.log_snr(t)).std() < 1e-8
    t = time_grid(sde, 10, "edm", t_min=1e-3)
    assert torch.diff(sde.noise_level(t) ** (1 / 7)).std() < 1e-8
    t = time_grid(sde, 10, "uniform", t_min=1e-3)
    assert torch.diff(t).std() < 1e-12


def test_vp_noise_level_inverse_is_exact() -> None:
    sde = VPSDE()
    t = torch.linspace(1e-4, 1.0, 50, dtype=torch.float64)
    torch.testing.assert_close(sde.t_from_noise_level(sde.noise_level(t)), t, rtol=1e-9, atol=0)


def test_bad_grid_arguments_name_the_field() -> None:
    sde = VPSDE()
    with pytest.raises(ValueError, match="steps"):
        time_grid(sde, 0)
    with pytest.raises(ValueError, match="t_min"):
        time_grid(sde, 5, t_min=2.0)
    with pytest.raises(ValueError, match="unknown grid kind"):
        time_grid(sde, 5, "cubic")  # type: ignore[arg-type]
