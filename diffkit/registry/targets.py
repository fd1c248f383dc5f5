"""Importing ``"pkg.mod:Attr"`` / ``"pkg.mod.Attr"`` targets and checking them against a base."""

from __future__ import annotations

import importlib
import inspect
import typing
from typing import Any

__all__ = ["check_target", "factory_return", "import_target", "target_path"]


def import_target(path: str) -> Any:
    """Import ``"pkg.mod:Attr.sub"`` or ``"pkg.mod.Attr"`` (longest importable module prefix).

    Raises:
        ImportError: the module or attribute does not exist (the message names which).
    """
    path = path.strip()
    if ":" in path:
        module_name, _, qualname = path.partition(":")
        module = importlib.import_module(module_name)
    else:
        parts = path.split(".")
        module = None
        for i in range(len(parts) - 1, 0, -1):
            name = ".".join(parts[:i])
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                # only swallow "this prefix is not a module", never errors inside a module
                if exc.name is None or not (name == exc.name or name.startswith(exc.name + ".")):
                    raise
                continue
            qualname = ".".join(parts[i:])
            break
        if module is None:
            raise ImportError(f"no importable module in {path!r}")
    obj: Any = module
    for attr in qualname.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise ImportError(f"{module.__name__!r} has no attribute {qualname!r}") from exc
    return obj


def target_path(obj: Any) -> str:
    """``"module:qualname"`` of a class or function."""
    return f"{obj.__module__}:{obj.__qualname__}"


def factory_return(obj: Any) -> Any:
    """The resolved return annotation of a factory function (``None`` if absent)."""
    try:
        hints = typing.get_type_hints(obj)
    except Exception:  # unresolvable annotations: fall back to the raw one
        hints = {"return": inspect.signature(obj).return_annotation}
    ret = hints.get("return")
    return None if ret is inspect.Signature.empty else ret


def check_target(obj: Any, base: type, kind: str) -> str | None:
    """Why ``obj`` cannot be a ``kind`` part, or ``None`` when it can.

    A part is a concrete subclass of ``base`` or a factory whose return annotation names one
    (timm-style presets ``def unet_cifar10(spec, /, dropout: float = 0.1) -> UNet``).
    """
    base_name = f"{base.__module__}.{base.__qualname__}"
    if inspect.isclass(obj):
        if not issubclass(obj, base):
            return f"{obj.__module__}.{obj.__qualname__} is not a subclass of {base_name}"
        if inspect.isabstract(obj):
            return f"{obj.__module__}.{obj.__qualname__} is abstract; register a concrete class"
        return None
    if callable(obj):
        ret = factory_return(obj)
        if ret is None:
            return (
                f"factory {getattr(obj, '__qualname__', obj)!r} has no return annotation; "
                f"annotate it with the concrete {kind} class it returns"
            )
        if not (inspect.isclass(ret) and issubclass(ret, base)):
            return f"factory {obj.__qualname__!r} returns {ret!r}, not a subclass of {base_name}"
        if inspect.isabstract(ret):
            return (
                f"factory {obj.__qualname__!r} is annotated with the abstract {ret.__qualname__}; "
                "annotate the concrete class it returns"
            )
        return None
    return f"{obj!r} is neither a class nor a factory function"
