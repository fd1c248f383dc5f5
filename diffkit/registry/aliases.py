"""Alias classes: how short names reach jsonargparse and LightningCLI.

Each kind has a public module ``diffkit.aliases.<kind>s`` whose PEP 562 ``__getattr__`` returns
:meth:`Registry.alias`, a class made by ``jsonargparse.class_from_function`` inside that module.
So ``class_path: diffkit.aliases.sdes.vp`` (what saved configs record) resolves in a fresh
process without anything materialised, and after :func:`materialize_all` the aliases are real
subclasses of each base, which jsonargparse's subclass-name lookup finds for bare short names
(``sde: vp``, ``--model.sde=vp``, ``{class_path: ddim, init_args: {...}}``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from diffkit.registry.errors import RegistryError
from diffkit.registry.registry import LoadFailure

__all__ = ["alias_hooks", "build_alias", "materialize_all", "resolve_alias"]


def alias_hooks(
    kind: str, make: Callable[[str, Any, Any], type]
) -> tuple[Callable[[str], type], Callable[[str, Any, Any], type]]:
    """An alias module's ``__getattr__`` and ``_build`` for ``kind``, sharing one re-entry set.

    ``make(name, target, func_return)`` must be defined in the alias module itself: it calls
    ``class_from_function``, which attaches the new class to its caller's module.
    """
    building: set[str] = set()

    def module_getattr(name: str) -> type:
        return resolve_alias(kind, name, building)

    def build(name: str, target: Any, func_return: Any) -> type:
        return build_alias(make, building, name, target, func_return)

    return module_getattr, build


def build_alias(
    make: Callable[[str, Any, Any], type],
    building: set[str],
    name: str,
    target: Any,
    func_return: Any,
) -> type:
    """Run an alias module's ``make`` (which calls ``class_from_function``) safely and fast.

    * ``class_from_function`` first calls ``hasattr(module, name)``, which re-enters the
      module's ``__getattr__``: ``building`` turns that re-entry into a plain miss.
    * It finds its caller's module with ``inspect.stack()``, whose cost grows with the stack
      depth times ``len(sys.modules)`` (~70 ms per alias inside the CLI). A fresh thread has a
      three-frame stack, so ``make`` runs in one (~1 ms).
    """
    result: list[Any] = []
    wrapped = resolved_factory(target)

    def run() -> None:
        try:
            result.append(make(name, wrapped, func_return))
        except BaseException as exc:  # re-raised in the calling thread
            result.append(exc)

    building.add(name)
    try:
        thread = threading.Thread(target=run, name=f"diffkit-alias-{name}")
        thread.start()
        thread.join()
    finally:
        building.discard(name)
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def resolved_factory(target: Any) -> Callable[..., Any]:
    """A function that calls ``target``, with ``target``'s signature and its annotations resolved.

    jsonargparse reads an alias's parameters from the wrapped callable. For a class it does so
    without the class's module as context, so postponed (string) annotations such as
    ``sampler: Sampler | None`` would stay unresolved, and a short name nested inside an
    aliased part (``{class_path: sample_grid, init_args: {sampler: ddim}}``) would then not be
    looked up among the right base's subclasses. Resolving them here, in ``target``'s own
    module, keeps nested short names working. Calls still return ``target``'s instances.
    """
    import functools
    import inspect
    import typing

    fn = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(fn)
        signature = inspect.signature(target)
    except Exception:  # unresolvable annotations: leave jsonargparse's own handling
        return target
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]

    @functools.wraps(target, assigned=("__module__", "__name__", "__qualname__", "__doc__"))
    def factory(*args: Any, **kwargs: Any) -> Any:
        return target(*args, **kwargs)

    returns = (
        target if isinstance(target, type) else hints.get("return", signature.return_annotation)
    )
    factory.__signature__ = signature.replace(parameters=params, return_annotation=returns)
    factory.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    factory.__wrapped__ = target
    return factory


def resolve_alias(kind: str, name: str, building: set[str]) -> type:
    """Body of the alias modules' ``__getattr__`` (raises ``AttributeError`` for misses)."""
    if name.startswith("_") or name in building:
        raise AttributeError(name)
    from diffkit.registry.kinds import REGISTRIES

    try:
        return REGISTRIES[kind].alias(name)
    except RegistryError as exc:
        raise AttributeError(str(exc)) from exc


def materialize_all(kinds: Iterable[str] | None = None) -> list[LoadFailure]:
    """Create every alias of every kind (or of ``kinds``); call before building a parser.

    Returns:
        The failures (broken, wrong-kind or ambiguous names); other names are unaffected.
    """
    from diffkit.registry.kinds import REGISTRIES

    out: list[LoadFailure] = []
    for kind in kinds if kinds is not None else REGISTRIES:
        out += REGISTRIES[kind].materialize_aliases()
    return out
