"""Checks of a user's input at the CLI boundary, before any work starts.

Each check raises :class:`~diffkit.errors.UserError` with a message that names the field, file
or value and the fix: config files (YAML syntax, empty, not a mapping), non-finite numbers,
output locations (a file where a directory is needed, under a file, not writable), devices and
accelerators, and sizes that cannot fit in memory (a sampler's plan, samples).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from diffkit.errors import UserError

__all__ = [
    "check_accelerator",
    "check_config_file",
    "check_config_files",
    "check_device",
    "check_finite",
    "check_output_dir",
    "check_output_file",
    "check_positive",
    "check_sampler",
    "check_tensor_memory",
    "config_files",
]

_CONFIG_FLAGS = ("-c", "--config")


def config_files(argv: Sequence[str]) -> list[str]:
    """The files given with ``-c``/``--config`` (``-c F``, ``--config F``, ``--config=F``)."""
    out: list[str] = []
    for i, arg in enumerate(argv):
        if arg in _CONFIG_FLAGS and i + 1 < len(argv):
            out.append(argv[i + 1])
        elif arg.startswith("--config="):
            out.append(arg.split("=", 1)[1])
    return out


def check_config_file(path: str | Path) -> None:
    """A config file exists and is a YAML mapping; YAML errors name the file, line and column."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise UserError(f"config file '{path}' does not exist; check the path given to -c")
    if p.is_dir():
        raise UserError(f"config file '{path}' is a directory; give a .yaml file to -c")
    try:
        text = p.read_text()
    except UnicodeDecodeError as err:
        raise UserError(
            f"config file '{path}' is not a text file (byte {err.start} is not UTF-8); "
            "give a YAML config"
        ) from err
    except OSError as err:
        raise UserError(f"config file '{path}' cannot be read: {err.strerror}") from err
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        hint = "; indent with spaces, not tabs" if "\t" in line or "'\\t'" in str(err) else ""
        what = " ".join(str(x) for x in (err.context, err.problem) if x)
        raise UserError(f"config file '{path}'{where}: {what}{hint}") from err
    except yaml.YAMLError as err:
        raise UserError(f"config file '{path}' is not valid YAML: {err}") from err
    if data is None:
        raise UserError(
            f"config file '{path}' is empty; a config is a YAML mapping such as "
            "'model: {sde: vp}' (see configs/)"
        )
    if not isinstance(data, dict):
        raise UserError(
            f"config file '{path}' holds a {type(data).__name__} at the top level; a config is "
            "a mapping of keys such as 'model:', 'data:' and 'trainer:' (see configs/)"
        )


def check_config_files(argv: Sequence[str]) -> None:
    """:func:`check_config_file` for every ``-c``/``--config`` file of ``argv``."""
    for path in config_files(argv):
        check_config_file(path)


def _walk(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    items = None
    if hasattr(value, "items") and callable(value.items):
        items = value.items()
    elif hasattr(value, "__dict__") and type(value).__name__ == "Namespace":
        items = vars(value).items()
    if items is not None:
        for k, v in items:
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _walk(v, f"{key}[{i}]")
    else:
        yield key, value


def check_finite(config: Any, prefix: str = "") -> None:
    """Every float in a parsed config (``Namespace``/dict/list) is finite."""
    for key, value in _walk(config, prefix):
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{key}: got {value}, but it must be a finite number")


def check_positive(value: float | int | None, field: str, *, allow_none: bool = False) -> None:
    """``value >= 1`` for counts (``None`` allowed only when ``allow_none``)."""
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise UserError(f"{field} must be >= 1, got {value}")


def _existing_ancestor(path: Path) -> Path:
    cur = path
    while not cur.exists() and not cur.is_symlink() and cur.parent != cur:
        cur = cur.parent
    return cur


def check_output_dir(path: str | Path, field: str) -> None:
    """``path`` is, or can be created as, a writable directory (nothing is created)."""
    p = Path(path).expanduser().absolute()
    found = _existing_ancestor(p)
    if not found.is_dir():
        if found == p:
            raise UserError(
                f"{field}: '{path}' is a file, but a directory is needed; give a directory path"
            )
        raise UserError(
            f"{field}: '{path}' cannot be created because '{found}' is a file; give a "
            "directory that is not under a file"
        )
    if not os.access(found, os.W_OK | os.X_OK):
        raise UserError(
            f"{field}: '{found}' is not writable, so '{path}' cannot be written; give a "
            "writable directory"
        )


def check_output_file(path: str | Path, field: str) -> None:
    """``path`` can be written as a file: not a directory, its directory creatable/writable."""
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        raise UserError(f"{field}: '{path}' is a directory; give a file path")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{field}: '{path}' exists and is not writable; give another path")
    check_output_dir(p.parent, field)


def check_device(name: str, field: str = "--device") -> Any:
    """The ``torch.device`` named ``name``, which must exist on this machine."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError) as err:
        raise UserError(
            f"{field} '{name}' is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UserError(f"{field} '{name}': no CUDA GPU is visible to torch; use cpu")
        if device.index is not None and device.index >= count:
            raise UserError(f"{field} '{name}': only {count} CUDA device(s), cuda:0..{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"{field} '{name}': MPS is not available on this machine; use cpu")
    elif device.type != "cpu":
        raise UserError(f"{field} '{name}': diffkit samples on cpu, cuda or mps")
    return device


_GPU_ACCELERATORS = ("gpu", "cuda")


def check_accelerator(accelerator: Any, field: str = "trainer.accelerator") -> None:
    """A named Lightning accelerator (``gpu``, ``cuda``, ``mps``) is present on this machine."""
    import torch

    if not isinstance(accelerator, str):
        return
    name = accelerator.strip().lower()
    if name in _GPU_ACCELERATORS:
        has_gpu = torch.cuda.is_available() or (name == "gpu" and torch.backends.mps.is_available())
        if not has_gpu:
            raise UserError(
                f"{field}={accelerator}, but no GPU is visible to torch "
                "(torch.cuda.is_available() is False); use --trainer.accelerator=cpu or auto"
            )
    elif name == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"{field}=mps, but MPS is not available here; use cpu or auto")


def check_sampler(sampler: Any, sde: Any, field: str) -> None:
    """``sampler`` has a plan for ``sde`` (its times lie in ``[0, T]``, it is defined for the
    SDE), and the plan fits in half the available host memory."""
    from diffkit.memory import available_memory, format_bytes, sampler_plan_bytes

    try:
        need = sampler_plan_bytes(sampler, sde)
    except ValueError as err:
        raise UserError(f"{field}: {err}") from err
    have = available_memory()
    if need is None or have is None or need <= have / 2:
        return
    raise UserError(
        f"{field}: {type(sampler).__name__} with steps={sampler.steps} needs about "
        f"{format_bytes(need)} for its per-step plan, and {format_bytes(have)} of memory is "
        "available (the plan may use half of it); use fewer steps"
    )


def check_tensor_memory(numel: int, bytes_per_value: int, field: str, what: str) -> None:
    """A tensor of ``numel`` values fits in half the available host memory."""
    from diffkit.memory import available_memory, format_bytes

    have = available_memory()
    need = numel * bytes_per_value
    if have is not None and need > have / 2:
        raise UserError(
            f"{field}: {what} need about {format_bytes(need)}, and {format_bytes(have)} of "
            "memory is available (they may use half of it); ask for fewer"
        )
