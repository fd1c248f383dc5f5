"""Sampling time grids, float64, decreasing from ``t_max`` (noise) to ``t_min`` (data side).

A grid is named (``uniform``, ``quadratic``, ``log_snr``, ``karras`` = ``edm``), given inline as
a list of times, or read from a **grid file**: a small JSON object whose ``times`` list holds the
``steps + 1`` decreasing times (``diffkit schedule`` writes one, with metadata: sampler, order,
NFE, spectrum, the W2 it reached). Formulas: docs/background/samplers.md#grids [DEIS code; EDM,
2206.00364, Table 1 (rho = 7 spacing of the noise level); DPM-Solver, 2206.00927].
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch
from torch import Tensor

if TYPE_CHECKING:
    from diffkit.sdes.base import LinearSDE

__all__ = [
    "GRID_KINDS",
    "GridKind",
    "GridName",
    "check_times",
    "grid_times",
    "read_grid_file",
    "time_grid",
    "write_grid_file",
]

GridName = Literal["uniform", "quadratic", "log_snr", "karras", "edm"]
#: A grid: a name, a path to a grid file (JSON), or the times themselves (decreasing).
GridKind = GridName | str | list[float]
GRID_KINDS: tuple[str, ...] = get_args(GridName)
#: The identifier a grid file carries (``"format"``).
GRID_FILE_FORMAT = "diffkit-grid"


def check_times(times: Any, steps: int | None, *, field: str, T: float | None = None) -> Tensor:
    """Validate explicit grid times; return them as float64 ``(steps + 1,)``.

    Raises ``ValueError`` naming ``field`` when they are not numbers, have the wrong length
    (``steps + 1``), are not strictly decreasing, or leave ``[0, T]``.
    """
    if not isinstance(times, (list, tuple, Tensor)) or len(times) < 2:
        raise ValueError(f"{field}: need a list of at least 2 times, got {times!r}")
    try:
        t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{field}: times must be numbers, got {times!r}") from err
    if steps is not None and t.numel() != steps + 1:
        raise ValueError(
            f"{field}: {t.numel()} times for {steps} steps; a grid of N steps has N + 1 times "
            f"(set steps to {t.numel() - 1} or use a grid made for {steps} steps)"
        )
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{field}: times must be finite")
    bad = torch.nonzero(t[1:] >= t[:-1]).reshape(-1)
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"{field}: times must be strictly decreasing (noise to data), but t[{i}] = "
            f"{float(t[i]):g} <= t[{i + 1}] = {float(t[i + 1]):g}"
        )
    if float(t[-1]) < 0:
        raise ValueError(f"{field}: times must be >= 0, the last is {float(t[-1]):g}")
    if T is not None and float(t[0]) > T * (1 + 1e-12):
        raise ValueError(f"{field}: the first time {float(t[0]):g} exceeds the SDE's T = {T:g}")
    return t


def read_grid_file(path: str | Path, *, field: str = "grid") -> tuple[Tensor, dict[str, Any]]:
    """A grid file's times (float64, validated except for its length) and its metadata."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{field}: unknown grid {str(path)!r}: neither a grid name ({', '.join(GRID_KINDS)}) "
            "nor an existing grid file (JSON written by 'diffkit schedule')"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{field}: grid file {str(path)!r} is not valid JSON ({err})") from err
    if not isinstance(data, dict) or "times" not in data:
        raise ValueError(
            f"{field}: grid file {str(path)!r} must be a JSON object with a 'times' list"
        )
    times = check_times(data["times"], None, field=f"{field} (file {str(path)!r}, 'times')")
    return times, {k: v for k, v in data.items() if k != "times"}


def write_grid_file(path: str | Path, times: Tensor, **meta: Any) -> Path:
    """Write ``times`` (decreasing, float64) and JSON-serialisable metadata to ``path``."""
    t = check_times(times, None, field="times")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": GRID_FILE_FORMAT, "steps": t.numel() - 1, **meta, "times": t.tolist()}
    path.write_text(json.dumps(body, indent=1) + "\n")
    return path


def grid_times(grid: GridKind, steps: int, *, field: str = "grid") -> Tensor | None:
    """The explicit times of ``grid`` (``steps + 1``, validated), or ``None`` for a grid name.

    Raises ``ValueError`` naming ``field`` for an unknown name, a missing or malformed file, or
    times of the wrong length / order.
    """
    if isinstance(grid, str):
        if grid in GRID_KINDS:
            return None
        if grid == "optimized":
            raise ValueError(
                f"{field}: an optimized grid depends on the data and the sampler: compute one "
                "with 'diffkit schedule --sampler NAME --steps N --spectrum cifar10 --out "
                "grid.json' and pass the file (grid: grid.json)"
            )
        times, _ = read_grid_file(grid, field=field)
        return check_times(times, steps, field=f"{field} (file {grid!r})")
    return check_times(grid, steps, field=field)


def time_grid(
    sde: LinearSDE,
    steps: int,
    kind: GridKind | Tensor = "quadratic",
    *,
    t_min: float | None = None,
    t_max: float | None = None,
    power: float = 2.0,
    rho: float = 7.0,
) -> Tensor:
    """Grid ``(steps + 1,)`` float64, ``t_0 = t_max > ... > t_steps = t_min``.

    Args:
        kind: ``uniform`` in t; ``quadratic`` (power ``power`` in t, the DEIS/CLD/BDM default);
            ``log_snr`` (uniform in ``log rho``); ``karras`` or ``edm`` (EDM's ``rho``-spacing
            of the noise level, mapped back to t through the SDE); or explicit times (a list,
            a tensor, or a grid file's path), whose end points must then agree with ``t_min`` /
            ``t_max`` when those are given.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if isinstance(kind, Tensor) or not (isinstance(kind, str) and kind in GRID_KINDS):
        t = kind if isinstance(kind, Tensor) else grid_times(kind, steps)
        t = check_times(t, steps, field="grid", T=sde.T)
        for name, want, got in (("t_max", t_max, t[0]), ("t_min", t_min, t[-1])):
            if want is not None and not math.isclose(float(got), want, rel_tol=1e-9, abs_tol=0):
                raise ValueError(
                    f"grid: explicit times run to {name} = {float(got):g}, but {name} = {want:g} "
                    f"was given; drop {name} or use a grid that ends there"
                )
        return t
    t_min = sde.t_min if t_min is None else float(t_min)
    t_max = sde.T if t_max is None else float(t_max)
    if not 0 <= t_min < t_max <= sde.T:
        raise ValueError(f"need 0 <= t_min < t_max <= T={sde.T}, got t_min={t_min}, t_max={t_max}")
    i = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        t = t_max + i * (t_min - t_max)
    elif kind == "quadratic":
        a, b = t_max ** (1 / power), t_min ** (1 / power)
        t = (a + i * (b - a)) ** power
    else:  # log_snr, karras / edm
        if t_min <= 0:
            raise ValueError(f"grid '{kind}' needs t_min > 0 (the noise level vanishes at t = 0)")
        lo, hi = sde.noise_level(t_min), sde.noise_level(t_max)
        if kind == "log_snr":
            levels = (hi.log() + i * (lo.log() - hi.log())).exp()
        else:
            levels = (hi ** (1 / rho) + i * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        t = sde.t_from_noise_level(levels)
    t[0], t[-1] = t_max, t_min  # exact end points, whatever the rounding inside
    return t
