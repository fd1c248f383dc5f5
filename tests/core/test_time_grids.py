"""Time grids: decreasing, exact end points, and each kind's defining property."""

from __future__ import annotations

import pytest
import torch

from diffkit.sdes.time_grids import GRID_KINDS, read_grid_file, time_grid, write_grid_file
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
    with pytest.raises(ValueError, match="unknown grid 'cubic'"):
        time_grid(sde, 5, "cubic")  # type: ignore[arg-type]


def test_karras_is_edm() -> None:
    sde = VPSDE()
    torch.testing.assert_close(
        time_grid(sde, 9, "karras"), time_grid(sde, 9, "edm"), rtol=0, atol=0
    )


def test_grid_file_round_trip_and_sampler_uses_its_times(tmp_path) -> None:
    from diffkit.samplers.deis import DEIS

    sde = VPSDE()
    times = time_grid(sde, 6, "log_snr", t_min=2e-3) ** 1.1 * 0.9
    path = write_grid_file(tmp_path / "g.json", times, sampler="deis", spectrum="cifar10")
    read, meta = read_grid_file(path)
    assert read.tolist() == times.tolist()  # exact float64 round trip
    assert meta["sampler"] == "deis" and meta["steps"] == 6 and meta["format"] == "diffkit-grid"
    sampler = DEIS(6, grid=str(path))
    assert sampler.plan(sde).times.tolist() == times.tolist()
    assert DEIS(6, grid=times.tolist()).times(sde).tolist() == times.tolist()
    with pytest.raises(ValueError, match="t_min"):
        DEIS(6, grid=str(path), t_min=1e-3).times(sde)


def test_grid_file_errors_name_the_field_and_the_fix(tmp_path) -> None:
    from diffkit.samplers.ddim import DDIM

    field = r"DDIM\.grid \(model\.sampler\.grid\)"
    good = tmp_path / "g.json"
    write_grid_file(good, torch.tensor([1.0, 0.5, 0.1, 1e-3], dtype=torch.float64))
    with pytest.raises(ValueError, match=field + r".*4 times for 5 steps.*N \+ 1"):
        DDIM(5, grid=str(good))
    cases = {
        '{"times": [1.0, 0.5, 0.6, 0.001]}': r"strictly decreasing.*t\[1\] = 0\.5 <= t\[2\] = 0\.6",
        '{"times": [1.0, 0.5, 0.1, -0.1]}': r">= 0",
        '{"times": [1.0, "a", 0.1, 0.0]}': r"numbers",
        '{"grid": [1.0, 0.5]}': r"'times' list",
        "[1.0, 0.5": r"not valid JSON",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.json"
        bad.write_text(text)
        with pytest.raises(ValueError, match=field + ".*" + message):
            DDIM(3, grid=str(bad))
    with pytest.raises(ValueError, match=field + r": unknown grid 'cubic'.*karras"):
        DDIM(3, grid="cubic")
    with pytest.raises(ValueError, match=field + r".*diffkit schedule"):
        DDIM(3, grid="optimized")
    too_late = DDIM(3, grid=[2.0, 1.0, 0.5, 0.1])
    with pytest.raises(ValueError, match=r"exceeds the SDE's T = 1"):
        too_late.times(VPSDE())
