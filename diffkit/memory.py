"""Memory available to a run, and estimates of what a configuration would take.

Used to refuse sizes that cannot fit (a network's parameters, a sampler's per-grid plan, a
sample tensor) with the estimate, before the allocation fails or the kernel kills the process.
Estimates are deliberately simple: bytes of float32 weights, float64 plan tables per step.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "available_memory",
    "format_bytes",
    "network_parameters",
    "sampler_plan_bytes",
    "tensor_bytes",
]

#: Bytes per plan row kept as a Python object in a sampling loop: a float for scalar SDEs, a
#: one-row ``LinearOp`` (with its tensor view) otherwise; measured with 10^6-step plans.
_ROW_BYTES_SCALAR, _ROW_BYTES_OPERATOR = 32, 600
#: Peak bytes of building a plan per stored float64 value (temporaries of the float64 algebra);
#: 1e6-step DDIM/Euler-Maruyama/Heun/DEIS plans on VP and CLD peaked at 3-6x the table bytes.
_BUILD_FACTOR = 6


def _cgroup_limit() -> int | None:
    """Memory left under this process's cgroup v2 limit, if there is one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
    except (OSError, ValueError):
        return None
    if limit == "max":
        return None
    return max(int(limit) - used, 0)


def available_memory(device: torch.device | str | None = None) -> int | None:
    """Bytes that can still be allocated on ``device`` (host memory for CPU), or ``None``
    when unknown. Host memory is ``MemAvailable`` (Linux), bounded by a cgroup limit."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    found: int | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
    if found is None:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit = _cgroup_limit()
    if limit is not None:
        found = limit if found is None else min(found, limit)
    return found


def format_bytes(n: float) -> str:
    """``1.5e9 -> '1.5 GB'`` (decimal units)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor reachable through tensors, ``LinearOp`` s, dicts, lists, tuples."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    coef = getattr(obj, "coef", None)
    return tensor_bytes(coef) if isinstance(coef, torch.Tensor) else 0


def network_parameters(factory: Callable[[Any], torch.nn.Module], spec: Any) -> tuple[str, int]:
    """``(class name, parameter count)`` of ``factory(spec)``, built on the meta device (no
    memory, no draw from the global random generator).

    Raises:
        Exception: whatever the factory raises (a network that cannot be built on meta too).
    """
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        net = factory(spec)
    count = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    return type(net).__name__, int(count)


def sampler_plan_bytes(sampler: Any, sde: Any, probe_steps: int = 16) -> int | None:
    """Estimated peak bytes of building ``sampler``'s plan for ``sde`` and its loop rows.

    Builds the plan of a copy with at most ``probe_steps`` steps and scales its float64 tables
    per step to ``sampler.steps``; ``None`` when the sampler has no integer ``steps``.

    Raises:
        ValueError: the plan cannot be built (times outside ``[0, T]``, a sampler undefined for
            ``sde``, ...).
    """
    steps = getattr(sampler, "steps", None)
    if not isinstance(steps, int) or steps < 1 or not hasattr(sampler, "plan"):
        return None
    probe = copy.copy(sampler)  # its own plan cache, few steps
    probe.__dict__ = {**sampler.__dict__, "_plans": {}, "steps": min(steps, probe_steps)}
    plan = probe.plan(sde)
    fields = list(vars(plan).values()) if hasattr(plan, "__dict__") else [plan]
    tables = [v for v in fields if not isinstance(v, dict)]
    for v in fields:  # a plan may keep its tables in a dict (``coefs``)
        if isinstance(v, dict):
            tables += list(v.values())
    per_step = tensor_bytes(tables) * _BUILD_FACTOR / probe.steps
    for value in tables:
        if hasattr(value, "is_scalar"):
            per_step += _ROW_BYTES_SCALAR if value.is_scalar else _ROW_BYTES_OPERATOR
    return math.ceil(per_step * steps)
