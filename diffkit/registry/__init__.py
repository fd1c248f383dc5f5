"""Names to classes: one registry per kind of part, built-ins, entry-point plugins, short names.

``import diffkit.registry`` imports neither torch nor any plugin. A name is looked up among
in-process registrations (:meth:`Registry.register`), then the built-in ``name -> "module:Class"``
table (:mod:`diffkit.registry.builtins`), then plugins: entry points of the kind's group
(``diffkit.sdes``, ...), read from distribution metadata on the first miss or listing. Only the
target of the name used is imported; one that fails to import, or is of the wrong kind, is
recorded and fails only its own name. A full class path always works.

**Short names in configs.** jsonargparse resolves ``sde: vp`` by looking for a subclass of the
parameter's type named ``vp``. :meth:`Registry.alias` makes one in ``diffkit.aliases.<kind>s``
whose ``__new__`` has the target's signature and returns the target's own instance. Saved
configs record that path, which resolves on attribute access in any process;
:func:`materialize_all` creates every alias before a parser is built, so bare names resolve too.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import importlib
import inspect
import os
import pkgutil
import re
import sys
import types
import typing
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from diffkit.registry.builtins import BUILTINS

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
DISABLE_ENV = "DIFFKIT_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN, IN_PROCESS = "built-in", "in-process"
Status = Literal["ok", "not loaded", "broken", "shadowed", "ambiguous"]
STATUSES: tuple[str, ...] = ("ok", "not loaded", "broken", "shadowed", "ambiguous")


# ---------------------------------------------------------------------------- errors
class RegistryError(LookupError):
    """Base class of every error a registry lookup raises."""


class UnknownNameError(RegistryError):
    """No part of this kind has the given name (the message suggests close names)."""


class AmbiguousNameError(RegistryError):
    """Two installed plugin distributions register the same name."""


class BrokenEntryError(RegistryError):
    """The name exists but its target failed to import."""


class WrongKindError(RegistryError):
    """The target is not a subclass of the kind's base (nor a factory annotated to return one)."""


class PluginShadowWarning(UserWarning):
    """A plugin reuses the name of a built-in part; the built-in keeps the name."""


def suggest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Close matches for ``name``: case-folded equality first, then ``difflib`` matches."""
    cands = sorted(set(candidates))
    folded = name.casefold()
    exact = [c for c in cands if c.casefold() == folded and c != name]
    close = difflib.get_close_matches(folded, cands, n=n, cutoff=0.6)
    return list(dict.fromkeys(c for c in exact + close if c != name))[:n]


def did_you_mean(matches: Sequence[str]) -> str:
    """``"Did you mean 'vp'? "`` (or ``'a' or 'b'``), or an empty string."""
    if not matches:
        return ""
    quoted = [f"'{m}'" for m in matches]
    text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"Did you mean {text}? "


# ---------------------------------------------------------------------------- entry points
@dataclass(frozen=True)
class PluginEntry:
    """One entry point: ``name = target`` in ``group``, from distribution ``dist`` ``version``."""

    group: str
    name: str
    target: str
    dist: str
    version: str

    @property
    def source(self) -> str:
        """``"dist==version"``."""
        return f"{self.dist}=={self.version}"


_SCANS: dict[str, tuple[PluginEntry, ...]] = {}


def autoload_disabled() -> bool:
    """Whether ``DIFFKIT_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def scan(group: str) -> tuple[PluginEntry, ...]:
    """Entry points of ``group`` in installed distributions: metadata only, nothing imported
    (cached until :func:`reset_scan_cache`; empty when autoloading is disabled)."""
    if autoload_disabled():
        return ()
    if group not in _SCANS:
        from importlib.metadata import entry_points

        found = []
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            name = dist.metadata["Name"] if dist is not None else "unknown"
            version = dist.version if dist is not None else "unknown"
            found.append(PluginEntry(group, ep.name, ep.value.strip(), name, version))
        _SCANS[group] = tuple(sorted(found, key=lambda e: (e.name, e.dist)))
    return _SCANS[group]


def reset_scan_cache() -> None:
    """Forget every scan (call after installing or faking a distribution)."""
    _SCANS.clear()


# ---------------------------------------------------------------------------- targets
def import_target(path: str) -> Any:
    """Import ``"pkg.mod:Attr"`` or ``"pkg.mod.Attr"`` (:func:`pkgutil.resolve_name`)."""
    return pkgutil.resolve_name(path.strip())


def _path(obj: Any) -> str:
    return f"{obj.__module__}:{obj.__qualname__}"


def _returns(obj: Any) -> Any:
    """The resolved return annotation of a factory (``None`` if absent)."""
    try:
        ret = typing.get_type_hints(obj).get("return")
    except Exception:  # unresolvable annotations: fall back to the raw one
        ret = inspect.signature(obj).return_annotation
    return None if ret is inspect.Signature.empty else ret


def _why_not(obj: Any, base: type, kind: str) -> str | None:
    """Why ``obj`` is not a ``kind`` part (a concrete subclass of ``base`` or a factory annotated
    to return one), or ``None``."""
    base_name = f"{base.__module__}.{base.__qualname__}"
    if inspect.isclass(obj):
        what = f"{obj.__module__}.{obj.__qualname__}"
        if not issubclass(obj, base):
            return f"{what} is not a subclass of {base_name}"
        return f"{what} is abstract; register a concrete class" if inspect.isabstract(obj) else None
    if not callable(obj):
        return f"{obj!r} is neither a class nor a factory function"
    ret, what = _returns(obj), f"factory {obj.__qualname__!r}"
    if ret is None:
        return f"{what} has no return annotation; annotate it with the concrete {kind} class"
    if not (inspect.isclass(ret) and issubclass(ret, base)):
        return f"{what} returns {ret!r}, not a subclass of {base_name}"
    if inspect.isabstract(ret):
        return f"{what} is annotated with the abstract {ret.__qualname__}"
    return None


# ---------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Entry:
    """One listed name, or a load failure: ``kind``, ``name``, ``target`` (``"module:attr"``),
    ``source`` (``built-in``, ``in-process`` or ``dist==version``), ``status`` and ``error``
    (why it is not ``ok``; for failures ``"ExcType: message"``)."""

    kind: str
    name: str
    target: str
    source: str
    status: Status
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _default_name(obj: Any) -> str:
    """``EulerMaruyama -> euler_maruyama``; functions keep their name."""
    name = getattr(obj, "__name__", "")
    if inspect.isclass(obj):
        name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
        name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
    return name


def _label(source: str) -> str:
    return source.replace("==", " ")


def _fields(p: PluginEntry) -> tuple[str, str, str]:
    return p.name, p.target, p.source


_ALL: weakref.WeakSet[Registry] = weakref.WeakSet()


# ---------------------------------------------------------------------------- the registry
class Registry:
    """Named parts of one ``kind`` (``"sde"``): subclasses of ``base`` (``"module:attr"``,
    imported when a target is checked), built-ins from ``builtins`` (``name -> "module:attr"``),
    plugins from the entry-point ``group``, alias classes in ``alias_module``."""

    def __init__(
        self,
        kind: str,
        base: str,
        *,
        group: str,
        alias_module: str | None = None,
        builtins: dict[str, str] | None = None,
    ) -> None:
        self.kind, self.base, self.group, self.alias_module = kind, base, group, alias_module
        self._builtins: dict[str, str] = {} if builtins is None else builtins
        self._base_type: type | None = None
        self._registered: dict[str, Any] = {}
        self._descriptions: dict[str, str] = {}
        self._objects: dict[str, Any] = {}  # imported built-in and plugin targets by name
        self._loaded: set[str] = set()  # targets imported and checked successfully
        self._failures: dict[str, Entry] = {}  # by target
        self._plugins: dict[str, list[PluginEntry]] | None = None
        self._aliases: dict[str, type] = {}
        self._warned: set[tuple[str, str]] = set()
        _ALL.add(self)

    @property
    def base_type(self) -> type:
        """The imported base class (imports its module on first access)."""
        if self._base_type is None:
            self._base_type = import_target(self.base)
        return self._base_type

    def register(
        self, name: str | None = None, *, override: bool = False, description: str | None = None
    ) -> Callable[[Any], Any]:
        """Decorator registering a concrete class, or a factory annotated to return one, as
        ``name`` (default: the function's name, or the class name in snake case); ``override``
        replaces an existing name; ``description`` is a summary line for listings."""

        def decorator(obj: Any) -> Any:
            key = name if name is not None else _default_name(obj)
            if not isinstance(key, str) or not NAME_PATTERN.match(key):
                raise ValueError(
                    f"invalid {self.kind} name {key!r}: names match {NAME_PATTERN.pattern} "
                    "(lower case letters, digits and underscores, e.g. 'my_sampler')"
                )
            why = _why_not(obj, self.base_type, self.kind)
            if why is not None:
                raise TypeError(f"cannot register {self.kind} '{key}': {why}")
            if not override and (key in self._registered or key in self._builtins):
                old = self._registered.get(key)
                existing = _path(old) if old is not None else self._builtins[key]
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

    def get(self, name: str) -> Any:
        """The class (or factory) registered as ``name``, or at the full path ``name``
        (``"pkg.mod:Attr"`` or ``"pkg.mod.Attr"``), importing only that target; raises a
        :class:`RegistryError` subclass that says what exists and what to do."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}")
        key = name.strip()
        if ":" in key or "." in key:
            return self._from_path(key)
        for table in (self._registered, self._objects):
            if key in table:
                return table[key]
        if key in self._builtins:
            return self._load(key, self._builtins[key], BUILTIN)
        found = self._plugin_table().get(key, [])
        if len(found) > 1:
            raise AmbiguousNameError(self._ambiguous_message(key, found))
        if found:
            return self._load(key, found[0].target, found[0].source)
        raise UnknownNameError(self.unknown_message(key))

    def create(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
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

    def failures(self) -> list[Entry]:
        """Every load failure recorded so far."""
        return list(self._failures.values())

    def entries(self) -> list[Entry]:
        """Every name from every source with its status; imports nothing."""
        table = self._plugin_table()
        out = [Entry(self.kind, k, _path(o), IN_PROCESS, "ok") for k, o in self._registered.items()]
        for key, target in self._builtins.items():
            if key not in self._registered:
                fail = self._failures.get(target)
                status: Status = "broken" if fail else "ok"
                out.append(Entry(self.kind, key, target, BUILTIN, status, fail and fail.error))
        for key, found in table.items():
            for p in found:
                fail = self._failures.get(p.target)
                err = fail.error if fail else None
                if key in self._registered or key in self._builtins:
                    owner = IN_PROCESS if key in self._registered else BUILTIN
                    why = f"the {owner} '{key}' keeps the name; use the full path "
                    status, why = "shadowed", why + p.target.replace(":", ".")
                elif len(found) > 1:
                    others = ", ".join(f"{q.source} -> {q.target}" for q in found if q is not p)
                    why = f"also registered by {others}; use the full class path"
                    status = "ambiguous"
                else:  # an invalid name stays broken even after its target imported
                    invalid, ok = not NAME_PATTERN.match(key), p.target in self._loaded
                    status = "broken" if invalid or fail else "ok" if ok else "not loaded"
                    why = f"ValueError: invalid name {key!r}" if invalid and not fail else None
                if why is not None:
                    err = f"{why}; {err}" if err else why
                out.append(Entry(self.kind, key, p.target, p.source, status, err))
        order = {IN_PROCESS: 0, BUILTIN: 1}
        return sorted(out, key=lambda e: (e.name, order.get(e.source, 2), e.source))

    def load_all(self) -> list[Entry]:
        """Import and check every target (also shadowed and ambiguous ones); return entries."""
        for e in self.entries():
            if e.source != IN_PROCESS and e.target not in self._loaded:
                with contextlib.suppress(RegistryError):
                    self._import_checked(e.name, e.target, e.source)
        return self.entries()

    def alias(self, name: str) -> type:
        """The jsonargparse-visible class ``<alias_module>.<name>`` (cached; see the module
        docstring): a subclass of the target's class whose ``__new__`` returns the target's
        instance, so instances are of the real class and pickle as such."""
        if name in self._aliases:
            return self._aliases[name]
        if self.alias_module is None:
            raise RegistryError(f"the {self.kind} registry has no alias module")
        if not NAME_PATTERN.match(name):
            raise UnknownNameError(self.unknown_message(name))
        target = self.get(name)
        cls = _alias_class(target, name, self.alias_module)
        setattr(_alias_module(self.alias_module), name, cls)
        self._aliases[name] = cls
        return cls

    def materialize_aliases(self) -> list[Entry]:
        """Create the alias of every name (imports every target); returns the failures
        (ambiguous names included) instead of raising."""
        out: list[Entry] = []
        for key in self.names():
            try:
                self.alias(key)
            except RegistryError as exc:
                found = (self._plugins or {}).get(key, [])
                target = self._builtins.get(key) or (found[0].target if found else "")
                source = found[0].source if found and key not in self._builtins else BUILTIN
                out.append(Entry(self.kind, key, target, source, "broken", str(exc)))
        for key, found in self._plugin_table().items():
            if len(found) > 1 and key not in self._registered and key not in self._builtins:
                msg = self._ambiguous_message(key, found)
                out += [Entry(self.kind, *_fields(p), "ambiguous", msg) for p in found]
        return out

    def _drop_alias(self, name: str) -> None:
        cls = self._aliases.pop(name, None)
        if cls is not None and self.alias_module is not None:
            module = _alias_module(self.alias_module)
            if module.__dict__.get(name) is cls:
                delattr(module, name)

    @contextlib.contextmanager
    def scoped(self) -> Iterator[Registry]:
        """Registrations, caches and aliases made inside are rolled back on exit (for tests)."""
        state = ("_registered", "_descriptions", "_objects", "_loaded", "_failures", "_plugins")
        saved = copy.deepcopy({k: getattr(self, k) for k in (*state, "_aliases", "_warned")})
        try:
            yield self
        finally:
            for key in set(self._aliases) | set(saved["_aliases"]):
                self._drop_alias(key)
            for key, value in saved.items():
                setattr(self, key, value)
            for key, cls in self._aliases.items():
                setattr(_alias_module(self.alias_module), key, cls)

    def reset_plugins(self) -> None:
        """Forget scanned plugins, their imported targets, failures and aliases."""
        for key in set(self._plugins or {}) - set(self._registered) - set(self._builtins):
            self._objects.pop(key, None)
            self._drop_alias(key)
        self._plugins = None
        self._failures.clear()
        self._loaded = {t for t in self._loaded if t in self._builtins.values()}

    def _plugin_table(self) -> dict[str, list[PluginEntry]]:
        if autoload_disabled():
            return {}
        if self._plugins is None:
            table: dict[str, list[PluginEntry]] = {}
            for p in scan(self.group):
                table.setdefault(p.name, []).append(p)
                if not NAME_PATTERN.match(p.name):
                    why = f"ValueError: invalid name {p.name!r} (names match {NAME_PATTERN.pattern}"
                    self._failures[p.target] = Entry(self.kind, *_fields(p), "broken", why + ")")
            self._plugins = table
            owned = set(self._builtins) | set(self._registered)
            for key, p in ((k, p) for k in owned & set(table) for p in table[k]):
                if (key, p.source) not in self._warned:
                    self._warned.add((key, p.source))
                    warnings.warn(
                        f"plugin {p.source} registers {self.kind} '{key}' -> {p.target}, which "
                        f"shadows diffkit's own '{key}'; the built-in keeps the name. Use "
                        f"class_path: {p.target.replace(':', '.')} for the plugin's, or rename it "
                        "in the plugin's entry points",
                        PluginShadowWarning,
                        stacklevel=3,
                    )
        return self._plugins

    def _import_checked(self, name: str, target: str, source: str) -> Any:
        dist = source not in (BUILTIN, IN_PROCESS)
        fix = f"fix or uninstall {_label(source)}" if dist else "this is a bug in diffkit"
        where = f"{self.kind} '{name}' ({source} -> {target})"
        try:
            obj = import_target(target)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            self._failures[target] = Entry(self.kind, name, target, source, "broken", error)
            raise BrokenEntryError(
                f"{where} failed to import: {error}. Choose another {self.kind} or {fix}; "
                f"'diffkit list {self.kind} --load' shows every failure"
            ) from exc
        why = _why_not(obj, self.base_type, self.kind)
        if why is not None:
            error = f"TypeError: {why}"
            self._failures[target] = Entry(self.kind, name, target, source, "broken", error)
            raise WrongKindError(
                f"{where} cannot be used: {why}. Choose another {self.kind} or {fix}; see "
                f"'diffkit list {self.kind} --load'"
            )
        self._failures.pop(target, None)
        self._loaded.add(target)
        return obj

    def _load(self, name: str, target: str, source: str) -> Any:
        self._objects[name] = self._import_checked(name, target, source)
        return self._objects[name]

    def _from_path(self, path: str) -> Any:
        try:
            obj = import_target(path)
        except Exception as exc:
            raise UnknownNameError(
                f"Cannot import {self.kind} '{path}': {type(exc).__name__}: {exc}. Give "
                f"'package.module:Class' or a registered name; see 'diffkit list {self.kind}'"
            ) from exc
        why = _why_not(obj, self.base_type, self.kind)
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
        groups = {IN_PROCESS: set(self._registered), BUILTIN: set(self._builtins)}
        groups[BUILTIN] -= groups[IN_PROCESS]
        for key, found in self._plugin_table().items():
            if key not in self._registered and key not in self._builtins:
                for p in found:
                    groups.setdefault(p.source, set()).add(key)
        order = {IN_PROCESS: 0, BUILTIN: 1}
        ranked = sorted((s for s in groups if groups[s]), key=lambda s: (order.get(s, 2), s))
        parts = [f"{', '.join(sorted(groups[s]))} ({_label(s)})" for s in ranked]
        text = f"Available: {'; '.join(parts)}." if parts else f"No {self.kind} is registered."
        if autoload_disabled():
            text += f" (Plugins are off: {DISABLE_ENV} is set.)"
        failed = sorted(self._failures.values(), key=lambda f: f.name)
        if failed:
            listed = "; ".join(f"{f.name} ({_label(f.source)}: {f.error})" for f in failed)
            text += f" Failed to load: {listed}."
        candidates = [n for names in groups.values() for n in names]
        return (
            f"Unknown {self.kind} '{name}'. {did_you_mean(suggest(name, candidates))}{text} "
            f"A full class path also works; see 'diffkit list {self.kind}'."
        )


# ---------------------------------------------------------------------------- alias classes
def _alias_class(target: Any, name: str, module: str) -> type:
    """A subclass of ``target`` (a class) or of its return type (a factory), in ``module``,
    whose ``__new__`` has the target's signature, annotations resolved in the target's own
    module (so short names nested in its parameters resolve against the right base), and
    returns ``target(*args, **kwargs)``: jsonargparse reads the parameters from it."""
    base = target if inspect.isclass(target) else _returns(target)
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
        signature = inspect.signature(target)
    except Exception:  # unresolvable annotations: leave jsonargparse's own handling
        hints, signature = {}, inspect.signature(target)
    params = [
        p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()
    ]
    cls_param = inspect.Parameter("cls", inspect.Parameter.POSITIONAL_ONLY)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return target(*args, **kwargs)

    __new__.__signature__ = signature.replace(
        parameters=[cls_param, *params], return_annotation=base
    )
    __new__.__annotations__ = {p.name: p.annotation for p in params}
    attrs = {"__new__": __new__, "__module__": module, "__qualname__": name}
    return type(name, (base,), {**attrs, "__doc__": target.__doc__})


def _alias_module(name: str) -> types.ModuleType:
    return sys.modules.get(name) or importlib.import_module(name)


def install_alias_modules() -> None:
    """Create the modules ``diffkit.aliases.<kind>s`` (called by :mod:`diffkit.aliases`); their
    ``__getattr__`` makes the alias of any registered name on first access."""
    for kind, registry in REGISTRIES.items():
        if registry.alias_module in sys.modules:
            continue
        module = types.ModuleType(registry.alias_module, f"Short-name alias classes of {kind}s.")

        def __getattr__(name: str, kind: str = kind) -> type:
            if name.startswith("_"):
                raise AttributeError(name)
            try:
                return REGISTRIES[kind].alias(name)
            except RegistryError as exc:
                raise AttributeError(str(exc)) from exc

        module.__getattr__ = __getattr__  # type: ignore[attr-defined]
        sys.modules[registry.alias_module] = module


def materialize_all(kinds: Iterable[str] | None = None) -> list[Entry]:
    """Create every alias of every kind (or of ``kinds``) before a parser is built; returns the
    failures (broken, wrong-kind or ambiguous names), which affect no other name."""
    out: list[Entry] = []
    for kind in kinds if kinds is not None else REGISTRIES:
        out += REGISTRIES[kind].materialize_aliases()
    return out


# ---------------------------------------------------------------------------- kinds
#: kind -> (base class, plural): the entry-point group is ``diffkit.<plural>``, the alias
#: module ``diffkit.aliases.<plural>``.
KINDS: dict[str, tuple[str, str]] = {
    "sde": ("diffkit.sdes.base:LinearSDE", "sdes"),
    "denoiser": ("diffkit.denoisers.base:Denoiser", "denoisers"),
    "sampler": ("diffkit.samplers.base:Sampler", "samplers"),
    "loss": ("diffkit.losses.base:Loss", "losses"),
    "metric": ("torchmetrics:Metric", "metrics"),
    "datamodule": ("diffkit.data.base:DiffusionDataModule", "datamodules"),
    "callback": ("lightning.pytorch.callbacks:Callback", "callbacks"),
}


def _make(kind: str, base: str, plural: str) -> Registry:
    table, aliases = BUILTINS.setdefault(kind, {}), f"diffkit.aliases.{plural}"
    return Registry(kind, base, group=f"diffkit.{plural}", alias_module=aliases, builtins=table)


REGISTRIES: dict[str, Registry] = {kind: _make(kind, *spec) for kind, spec in KINDS.items()}
SDES, DENOISERS, SAMPLERS, LOSSES = (REGISTRIES[k] for k in ("sde", "denoiser", "sampler", "loss"))
METRICS, DATAMODULES, CALLBACKS = (REGISTRIES[k] for k in ("metric", "datamodule", "callback"))


def plugin_distributions() -> list[tuple[str, str]]:
    """``(distribution, version)`` of every installed distribution providing diffkit parts
    (metadata only; empty when autoloading is disabled)."""
    return sorted({(p.dist, p.version) for r in REGISTRIES.values() for p in scan(r.group)})


def reset_plugin_state() -> None:
    """Forget every entry-point scan and plugin import in every registry (tests, reinstalls)."""
    reset_scan_cache()
    for registry in list(_ALL):
        registry.reset_plugins()
