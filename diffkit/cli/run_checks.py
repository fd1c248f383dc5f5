"""Checks of a ``diffkit fit`` (``validate``, ...) run before it starts.

:func:`check_config` reads the parsed config (finite numbers, thread count, accelerator, output
locations: ``trainer.default_root_dir``, each logger's ``save_dir``, each checkpoint
``dirpath``); :func:`check_built_run` the built parts (optimizer arguments, training memory,
sampler plans, at least one training batch per rank). :func:`explain_build_error` turns an error
raised while the parts were built into one message naming the config key.
"""

from __future__ import annotations

import re
from typing import Any

from diffkit.cli.input_checks import (
    check_accelerator,
    check_finite,
    check_output_dir,
    check_sampler,
)
from diffkit.errors import UserError

__all__ = ["check_built_run", "check_config", "explain_build_error"]


def _get(node: Any, key: str) -> Any:
    if node is None:
        return None
    if isinstance(node, dict):
        return node.get(key)
    return getattr(node, key, None)


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _check_sampler_steps(config: Any) -> None:
    """A sampler's ``steps`` whose float64 time grid alone would not fit, refused before the
    sampler is built (building it allocates the grid)."""
    from diffkit.cli.input_checks import _walk
    from diffkit.memory import available_memory, format_bytes

    have = available_memory()
    for key, value in _walk(config, ""):
        if key.endswith("sampler.init_args.steps") and isinstance(value, int) and have:
            need = 8 * 6 * value  # float64 times and temporaries of building them
            if need > have / 2:
                raise UserError(
                    f"{key}={value}: building its time grid needs about {format_bytes(need)}, "
                    f"and {format_bytes(have)} of memory is available; use fewer steps"
                )


def check_config(config: Any) -> None:
    """Checks of the parsed config of one subcommand, before any part is built."""
    check_finite(config)
    _check_sampler_steps(config)
    threads = _get(config, "num_threads")
    if threads is not None and threads < 1:
        raise UserError(f"num_threads must be >= 1 or null, got {threads}")
    trainer = _get(config, "trainer")
    check_accelerator(_get(trainer, "accelerator"))
    root = _get(trainer, "default_root_dir")
    if isinstance(root, str):
        check_output_dir(root, "trainer.default_root_dir")
    for i, logger in enumerate(_as_list(_get(trainer, "logger"))):
        save_dir = _get(_get(logger, "init_args"), "save_dir")
        if isinstance(save_dir, str):
            check_output_dir(save_dir, f"trainer.logger[{i}].init_args.save_dir")
    for i, callback in enumerate(_as_list(_get(trainer, "callbacks"))):
        dirpath = _get(_get(callback, "init_args"), "dirpath")
        if isinstance(dirpath, str):
            check_output_dir(dirpath, f"trainer.callbacks[{i}].init_args.dirpath")


def check_built_run(model: Any, datamodule: Any, trainer: Any, *, training: bool = True) -> None:
    """Checks that need the built module, datamodule and trainer (``training``: also the
    optimizer, the training memory and a training batch per rank)."""
    if training:
        _check_optimizer(model)
        _check_training_memory(model, trainer)
    sde = getattr(model, "sde", None)
    if sde is not None:
        check_sampler(model.sampler, sde, "model.sampler")
        for callback in getattr(trainer, "callbacks", []):
            sampler = getattr(callback, "sampler", None)
            if sampler is not None:
                check_sampler(sampler, sde, f"{type(callback).__name__}.sampler")
    if training:
        _check_batches(datamodule, trainer)


def _check_optimizer(model: Any) -> None:
    """Build the optimizer (and scheduler) once: torch checks their arguments (lr >= 0, ...)."""
    configure = getattr(model, "configure_optimizers", None)
    if configure is None:
        return
    try:
        configure()
    except ValueError as err:
        raise UserError(
            f"model.optimizer / model.lr_scheduler: {err}; fix its init_args (lr, betas, ...)"
        ) from err


def _check_training_memory(model: Any, trainer: Any) -> None:
    """Gradients and two optimizer moments (Adam) per parameter, plus an EMA copy, fit."""
    from diffkit.memory import available_memory, format_bytes

    params = list(model.parameters())
    if not params:
        return
    weights = sum(p.numel() * p.element_size() for p in params)
    copies = 3 + any(type(c).__name__ == "EMA" for c in getattr(trainer, "callbacks", []))
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    have = available_memory(device if getattr(device, "type", "cpu") == "cuda" else None)
    if have is not None and weights * copies > have:
        raise UserError(
            f"model.denoiser: training its {sum(p.numel() for p in params):.3g} parameters "
            f"needs about {format_bytes(weights * copies)} beyond the weights (gradients, "
            f"optimizer moments{', EMA' if copies > 3 else ''}), and {format_bytes(have)} is "
            "available; make the network smaller (width, depth, channels)"
        )


def _check_batches(datamodule: Any, trainer: Any) -> None:
    """Datamodules that drop the last partial batch get at least one batch on every rank."""
    num_train = getattr(datamodule, "num_train", None)
    batch_size = getattr(datamodule, "batch_size", None)
    if not isinstance(num_train, int) or not isinstance(batch_size, int):
        return
    world = max(int(getattr(trainer, "world_size", 1) or 1), 1)
    per_rank = num_train // world
    if per_rank < batch_size:
        ranks = f" split over {world} ranks ({per_rank} each)" if world > 1 else ""
        raise UserError(
            f"data.init_args.batch_size={batch_size} is larger than the {num_train} training "
            f"samples{ranks}: the last partial batch is dropped, so nothing would train; use "
            f"batch_size <= {per_rank} or a larger num_train"
        )


_UNION = "Does not validate against any of the Union subtypes"


def _key_of(config: Any, class_path: str, key: str = "") -> list[str]:
    """Keys of ``config`` whose value is a ``class_path``/``init_args`` node of ``class_path``."""
    found: list[str] = []
    if _get(config, "class_path") == class_path:
        found.append(key)
    items = (
        config.items()
        if isinstance(config, dict)
        else vars(config).items()
        if type(config).__name__ == "Namespace"
        else enumerate(config)
        if isinstance(config, list)
        else []
    )
    for k, v in items:
        sub = f"{key}[{k}]" if isinstance(k, int) else (f"{key}.{k}" if key else str(k))
        if isinstance(v, dict | list) or type(v).__name__ == "Namespace":
            found += _key_of(v, class_path, sub)
    return found


def explain_build_error(err: BaseException, config: Any) -> str:
    """One message for an error raised while building the parts: jsonargparse's Union
    diagnostics reduced to the part's own message and its config key; the Trainer's
    MisconfigurationException prefixed with ``trainer``."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    text = str(err)
    if isinstance(err, MisconfigurationException):
        return f"trainer: {text}"
    if not text.startswith(_UNION):
        return text
    errors = [
        line.strip()[2:]
        for line in text.splitlines()
        if line.strip().startswith("- ") and "Expected a <class 'NoneType'>" not in line
    ]
    given = re.search(r"class_path='([^']+)'", text)
    keys = _key_of(config, given.group(1)) if given else []
    prefix = f"{keys[0]}: " if len(keys) == 1 else ""
    return prefix + ("; ".join(errors) if errors else text)
