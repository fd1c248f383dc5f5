"""A generic registry of named parts, with lazy, fault-isolated entry-point plugins.

Three sources of names, in this order of precedence:

1. in-process registrations (:meth:`Registry.register`, e.g. a user's own class or a test's);
2. built-ins, a static ``name -> "module:attr"`` table (:mod:`diffkit.registry.builtins`);
3. plugins, entry points of the kind's group (``diffkit.sdes``, ...) in installed distributions.

Nothing is imported until a name is used: the first miss (or a listing) scans the kind's
entry-point group once and stores only strings; :meth:`Registry.get` imports one target. A
target that fails to import, or is not of the kind's base type, becomes a recorded
:class:`LoadFailure` and fails only its own name. A plugin reusing a built-in's name is
*shadowed* (warned once; the built-in keeps the name; its full class path still works). Two
plugins with one name make it *ambiguous* (:class:`AmbiguousNameError` asks for the full path).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Generic, Literal, TypeVar

from diffkit.registry.entry_points import PluginEntry, autoload_disabled, reset_scan_cache, scan
from diffkit.registry.errors import (
    AmbiguousNameError,
    BrokenEntryError,
    PluginShadowWarning,
    RegistryError,
    UnknownNameError,
    WrongKindError,
    did_you_mean,
    suggest,
)
from diffkit.registry.targets import check_target, factory_return, import_target, target_path

__all__ = [
    "NAME_PATTERN",
    "STATUSES",
    "Entry",
    "LoadFailure",
    "Registry",
    "Status",
    "reset_plugin_state",
]

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
BUILTIN = "built-in"
IN_PROCESS = "in-process"
Status = Literal["ok", "not loaded", "broken", "shadowed", "ambiguous"]
STATUSES: tuple[str, ...] = ("ok", "not loaded", "broken", "shadowed", "ambiguous")

_ALL: weakref.WeakSet[Registry] = weakref.WeakSet()


@dataclass(frozen=True)
class Entry:
    """One listed name.

    Attributes:
        kind: ``sde``, ``denoiser``, ...
        name: the short name.
        target: ``"module:attr"``.
        source: ``"built-in"``, ``"in-process"`` or ``"dist==version"``.
        status: ``ok | not loaded | broken | shadowed | ambiguous``.
        error: why the status is not ``ok`` (``None`` otherwise).
    """

    kind: str
    name: str
    target: str
    source: str
    status: Status
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoadFailure:
    """A target that could not be used: ``error`` is ``"ExcType: message"``."""

    kind: str
    name: str
    target: str
    source: str
    error: str


def _default_name(obj: Any) -> str:
    """``EulerMaruyama -> euler_maruyama``, ``SubVPSDE -> sub_vpsde``, functions keep theirs."""
    name = getattr(obj, "__name__", "")
    if inspect.isclass(obj):
        name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
        name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return name


def _source_label(source: str) -> str:
    """``"diffkit-example==0.1.0" -> "diffkit-example 0.1.0"`` for messages."""
    return source.replace("==", " ")


class Registry(Generic[T]):
    """Named parts of one kind.

    Args:
        kind: singular kind name (``"sde"``), used in messages and listings.
        base: the base type as ``"module:attr"`` (imported only when a target is checked).
        group: entry-point group scanned for plugins (``"diffkit.sdes"``).
        alias_module: module holding the jsonargparse alias classes (``"diffkit.aliases.sdes"``),
            or ``None`` for registries without short names in configs.
        builtins: the live ``name -> "module:attr"`` table of built-in parts.
    """

    def __init__(
        self,
        kind: str,
        base: str,
        *,
        group: str,
        alias_module: str | None = None,
        builtins: dict[str, str] | None = None,
    ) -> None:
        if not NAME_PATTERN.match(kind):
            raise ValueError(f"registry kind must match {NAME_PATTERN.pattern}, got {kind!r}")
        if ":" not in base:
            raise ValueError(f"registry base must be a 'module:attr' string, got {base!r}")
        self.kind, self.base, self.group, self.alias_module = kind, base, group, alias_module
        self._builtins: dict[str, str] = builtins if builtins is not None else {}
        self._base_type: type | None = None
        self._registered: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._objects: dict[str, Any] = {}
        self._loaded: set[str] = set()  # targets imported and checked successfully
        self._failures: dict[str, LoadFailure] = {}  # by target
        self._plugins: dict[str, list[PluginEntry]] | None = None
        self._aliases: dict[str, type] = {}
        self._warned: set[tuple[str, str]] = set()
        _ALL.add(self)

    def __repr__(self) -> str:
        return f"Registry(kind={self.kind!r}, base={self.base!r}, group={self.group!r})"

    # ------------------------------------------------------------------ base type
    @property
    def base_type(self) -> type:
        """The imported base class (imports its module on first access)."""
        if self._base_type is None:
            self._base_type = import_target(self.base)
        return self._base_type

    # ------------------------------------------------------------------ registration
    def register(
        self, name: str | None = None, *, override: bool = False, description: str | None = None
    ) -> Callable[[Any], Any]:
        """Decorator registering a concrete class, or a factory annotated to return one.

        Args:
            name: short name (default: the function's name, or the class name in snake case).
            override: replace an existing in-process or built-in name instead of raising.
            description: one-line summary for listings (default: the docstring's first line).

        Raises:
            ValueError: invalid or duplicate name (pass ``override=True`` to replace).
            TypeError: the object is not of this kind.
        """

        def decorator(obj: Any) -> Any:
            key = name if name is not None else _default_name(obj)
            if not isinstance(key, str) or not NAME_PATTERN.match(key):
                raise ValueError(
                    f"invalid {self.kind} name {key!r}: names match {NAME_PATTERN.pattern} "
                    "(lower case letters, digits and underscores, e.g. 'my_sampler')"
                )
            why = check_target(obj, self.base_type, self.kind)
            if why is not None:
                raise TypeError(f"cannot register {self.kind} '{key}': {why}")
            if not override and (key in self._registered or key in self._builtins):
                existing = (
                    target_path(self._registered[key])
                    if key in self._registered
                    else self._builtins[key]
                )
                raise ValueError(
                    f"{self.kind} '{key}' is already registered ({existing}); pass "
                    "override=True to replace it, or choose another name"
                )
            self._registered[key] = obj
            if description is not None:
                self._descriptions[key] = description
            self._objects.pop(key, None)
            self._drop_alias(key)
            return obj

        return decorator

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> Any:
        """The class (or factory) registered as ``name``, importing only that target.

        ``name`` may also be a full path, ``"pkg.mod:Attr"`` or ``"pkg.mod.Attr"``.

        Raises:
            UnknownNameError: no such name (with suggestions) or an unimportable path.
            AmbiguousNameError: two plugins register ``name``.
            BrokenEntryError: the target failed to import.
            WrongKindError: the target is not of this kind.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = name.strip()
        if ":" in key or "." in key:
            return self._from_path(key)
        if key in self._registered:
            return self._registered[key]
        if key in self._objects:
            return self._objects[key]
        if key in self._builtins:
            return self._load(key, self._builtins[key], BUILTIN)
        found = self._plugin_table().get(key, [])
        if len(found) > 1:
            raise AmbiguousNameError(self._ambiguous_message(key, found))
        if found:
            return self._load(key, found[0].target, found[0].source)
        raise UnknownNameError(self.unknown_message(key))

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> T:
        """``get(name)(*args, **kwargs)``."""
        return self.get(name)(*args, **kwargs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def names(self) -> list[str]:
        """Every usable short name, sorted (scans plugins; ambiguous names are left out)."""
        table = self._plugin_table()
        out = set(self._registered) | set(self._builtins)
        out |= {n for n, found in table.items() if len(found) == 1 and NAME_PATTERN.match(n)}
        return sorted(out)

    def description(self, name: str) -> str | None:
        """The ``description`` given at registration, if any (listings fall back to docstrings)."""
        return self._descriptions.get(name)

    def failures(self) -> list[LoadFailure]:
        """Every load failure recorded so far."""
        return list(self._failures.values())

    def entries(self) -> list[Entry]:
        """Every name from every source with its status; imports nothing."""
        table = self._plugin_table()
        out: list[Entry] = []
        for key, obj in self._registered.items():
            out.append(Entry(self.kind, key, target_path(obj), IN_PROCESS, "ok"))
        for key, target in self._builtins.items():
            if key in self._registered:
                continue
            fail = self._failures.get(target)
            status: Status = "broken" if fail else "ok"
            out.append(Entry(self.kind, key, target, BUILTIN, status, fail.error if fail else None))
        for key, found in table.items():
            for p in found:
                fail = self._failures.get(p.target)
                err = fail.error if fail else None
                if key in self._registered or key in self._builtins:
                    owner = "in-process" if key in self._registered else "built-in"
                    dotted = p.target.replace(":", ".")
                    status = "shadowed"
                    why = f"the {owner} '{key}' keeps the name; use the full path {dotted}"
                    err = f"{why}; {err}" if err else why
                elif len(found) > 1:
                    others = ", ".join(f"{q.source} -> {q.target}" for q in found if q is not p)
                    why = f"also registered by {others}; use the full class path"
                    status, err = "ambiguous", f"{why}; {err}" if err else why
                elif not NAME_PATTERN.match(key) or fail:
                    status = "broken"
                    err = (
                        err
                        or f"ValueError: invalid name {key!r} (names match {NAME_PATTERN.pattern})"
                    )
                elif p.target in self._loaded:
                    status = "ok"
                else:
                    status = "not loaded"
                out.append(Entry(self.kind, key, p.target, p.source, status, err))
        order = {IN_PROCESS: 0, BUILTIN: 1}
        return sorted(out, key=lambda e: (e.name, order.get(e.source, 2), e.source))

    def load_all(self) -> list[Entry]:
        """Import and check every target (also shadowed and ambiguous ones); return entries."""
        for e in self.entries():
            if e.source == IN_PROCESS or e.target in self._loaded:
                continue
            with contextlib.suppress(RegistryError):
                self._import_checked(e.name, e.target, e.source)
        return self.entries()

    # ------------------------------------------------------------------ aliases
    def alias(self, name: str) -> type:
        """The jsonargparse-visible alias class ``<alias_module>.<name>`` (cached).

        It subclasses the target's class and its ``__new__`` returns the target's instance, so
        instances are of the real class and pickle as such.
        """
        if name in self._aliases:
            return self._aliases[name]
        if self.alias_module is None:
            raise RegistryError(f"the {self.kind} registry has no alias module")
        if not NAME_PATTERN.match(name):
            raise UnknownNameError(self.unknown_message(name))
        target = self.get(name)
        func_return = target if inspect.isclass(target) else factory_return(target)
        module = importlib.import_module(self.alias_module)
        cls = module._build(name, target, func_return)
        self._aliases[name] = cls
        return cls

    def materialize_aliases(self) -> list[LoadFailure]:
        """Create the alias class of every name so bare short names resolve in jsonargparse.

        Imports every target; returns the failures (ambiguous names included) instead of raising.
        """
        out: list[LoadFailure] = []
        for key in self.names():
            try:
                self.alias(key)
            except RegistryError as exc:
                target = self._builtins.get(key, "")
                found = (self._plugins or {}).get(key, [])
                source = found[0].source if found and not target else BUILTIN
                target = target or (found[0].target if found else "")
                out.append(LoadFailure(self.kind, key, target, source, str(exc)))
        for key, found in self._plugin_table().items():
            if len(found) > 1 and key not in self._registered and key not in self._builtins:
                msg = self._ambiguous_message(key, found)
                out += [LoadFailure(self.kind, key, p.target, p.source, msg) for p in found]
        return out

    def _drop_alias(self, name: str) -> None:
        cls = self._aliases.pop(name, None)
        if cls is not None and self.alias_module is not None:
            module = importlib.import_module(self.alias_module)
            if module.__dict__.get(name) is cls:
                delattr(module, name)

    # ------------------------------------------------------------------ tests
    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Registrations, caches and aliases made inside are rolled back on exit (for tests)."""
        saved = (
            dict(self._registered),
            dict(self._descriptions),
            dict(self._objects),
            set(self._loaded),
            dict(self._failures),
            None if self._plugins is None else {k: list(v) for k, v in self._plugins.items()},
            dict(self._aliases),
            set(self._warned),
        )
        try:
            yield self
        finally:
            module = (
                importlib.import_module(self.alias_module)
                if self.alias_module and (self._aliases or saved[6])
                else None
            )
            if module is not None:
                for key, cls in self._aliases.items():
                    if saved[6].get(key) is not cls and module.__dict__.get(key) is cls:
                        delattr(module, key)
                for key, cls in saved[6].items():
                    setattr(module, key, cls)
            (
                self._registered,
                self._descriptions,
                self._objects,
                self._loaded,
                self._failures,
                self._plugins,
                self._aliases,
                self._warned,
            ) = saved

    def reset_plugins(self) -> None:
        """Forget scanned plugins, their imported targets, failures and aliases."""
        plugin_names = set(self._plugins or {}) - set(self._registered) - set(self._builtins)
        for key in plugin_names:
            self._objects.pop(key, None)
            self._drop_alias(key)
        self._plugins = None
        self._failures.clear()
        self._loaded = {t for t in self._loaded if t in self._builtins.values()}

    # ------------------------------------------------------------------ internals
    def _plugin_table(self) -> dict[str, list[PluginEntry]]:
        if autoload_disabled():
            return {}
        if self._plugins is None:
            table: dict[str, list[PluginEntry]] = {}
            for p in scan(self.group):
                table.setdefault(p.name, []).append(p)
                if not NAME_PATTERN.match(p.name):
                    self._failures[p.target] = LoadFailure(
                        self.kind,
                        p.name,
                        p.target,
                        p.source,
                        f"ValueError: invalid name {p.name!r} (names match {NAME_PATTERN.pattern})",
                    )
            self._plugins = table
            self._warn_shadowed(table)
        return self._plugins

    def _warn_shadowed(self, table: dict[str, list[PluginEntry]]) -> None:
        for key, found in table.items():
            if key not in self._builtins and key not in self._registered:
                continue
            for p in found:
                if (key, p.source) in self._warned:
                    continue
                self._warned.add((key, p.source))
                warnings.warn(
                    f"plugin {p.source} registers {self.kind} '{key}' -> {p.target}, which "
                    f"shadows diffkit's own '{key}'; the built-in keeps the name. Use "
                    f"class_path: {p.target.replace(':', '.')} for the plugin's, or rename it "
                    "in the plugin's entry points",
                    PluginShadowWarning,
                    stacklevel=4,
                )

    def _import_checked(self, name: str, target: str, source: str) -> Any:
        dist = source if source not in (BUILTIN, IN_PROCESS) else None
        fix = f"fix or uninstall {_source_label(dist)}" if dist else "this is a bug in diffkit"
        try:
            obj = import_target(target)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._failures[target] = LoadFailure(self.kind, name, target, source, error)
            raise BrokenEntryError(
                f"{self.kind} '{name}' ({source} -> {target}) failed to import: {error}. "
                f"Choose another {self.kind} or {fix}; 'diffkit list {self.kind} --load' shows "
                "every failure"
            ) from exc
        why = check_target(obj, self.base_type, self.kind)
        if why is not None:
            self._failures[target] = LoadFailure(
                self.kind, name, target, source, f"TypeError: {why}"
            )
            raise WrongKindError(
                f"{self.kind} '{name}' ({source} -> {target}) cannot be used: {why}. "
                f"Choose another {self.kind} or {fix}; see 'diffkit list {self.kind} --load'"
            )
        self._failures.pop(target, None)
        self._loaded.add(target)
        return obj

    def _load(self, name: str, target: str, source: str) -> Any:
        obj = self._import_checked(name, target, source)
        self._objects[name] = obj
        return obj

    def _from_path(self, path: str) -> Any:
        try:
            obj = import_target(path)
        except Exception as exc:
            raise UnknownNameError(
                f"Cannot import {self.kind} '{path}': {type(exc).__name__}: {exc}. Give "
                f"'package.module:Class' or a registered name; see 'diffkit list {self.kind}'"
            ) from exc
        why = check_target(obj, self.base_type, self.kind)
        if why is not None:
            raise WrongKindError(
                f"'{path}' cannot be used as a {self.kind}: {why}; see 'diffkit list {self.kind}'"
            )
        return obj

    def _ambiguous_message(self, name: str, found: list[PluginEntry]) -> str:
        listed = "; ".join(f"{p.source} -> {p.target}" for p in found)
        return (
            f"{self.kind} '{name}' is ambiguous: {len(found)} installed plugins register it "
            f"({listed}). Give the full class path instead, e.g. "
            f"class_path: {found[0].target.replace(':', '.')}, or uninstall one of them; see "
            f"'diffkit list {self.kind}'"
        )

    def unknown_message(self, name: str) -> str:
        """``Unknown sde 'vpp'. Did you mean 'vp'? Available: ... (built-in); ...``."""
        table = self._plugin_table()
        groups: dict[str, list[str]] = {}
        for key in self._registered:
            groups.setdefault(IN_PROCESS, []).append(key)
        for key in self._builtins:
            if key not in self._registered:
                groups.setdefault(BUILTIN, []).append(key)
        for key, found in table.items():
            if key in self._registered or key in self._builtins:
                continue
            for p in found:
                groups.setdefault(p.source, []).append(key)
        candidates = [n for names in groups.values() for n in names]
        if groups:
            order = {IN_PROCESS: 0, BUILTIN: 1}
            parts = [
                f"{', '.join(sorted(set(groups[s])))} ({_source_label(s)})"
                for s in sorted(groups, key=lambda s: (order.get(s, 2), s))
            ]
            available = "Available: " + "; ".join(parts) + "."
        else:
            available = f"No {self.kind} is registered."
        if autoload_disabled():
            available += " (Plugins are off: DIFFKIT_DISABLE_PLUGIN_AUTOLOAD is set.)"
        failed = ""
        if self._failures:
            failed = (
                " Failed to load: "
                + "; ".join(
                    f"{f.name} ({_source_label(f.source)}: {f.error})"
                    for f in sorted(self._failures.values(), key=lambda f: f.name)
                )
                + "."
            )
        return (
            f"Unknown {self.kind} '{name}'. {did_you_mean(suggest(name, candidates))}"
            f"{available}{failed} A full class path also works; see 'diffkit list {self.kind}'."
        )


def reset_plugin_state() -> None:
    """Forget every entry-point scan and plugin import in every registry (tests, reinstalls)."""
    reset_scan_cache()
    for registry in list(_ALL):
        registry.reset_plugins()
