"""The CLI's argument parser: jsonargparse errors about unknown short names, made useful.

jsonargparse reports an unresolvable short name (``--model.sde=vpp``) as a nested
``Expected a dot import path string: vpp`` buried in Union diagnostics. :class:`ShortNameErrors`
rewrites such errors into the registry's message (``Unknown sde 'vpp'. Did you mean 'vp'? ...``),
reported like every user error: usage, one message, exit code 2, no traceback.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

__all__ = [
    "DiffkitArgumentParser",
    "ShortNameArgumentParser",
    "ShortNameErrors",
    "explain_non_finite",
    "explain_unknown_names",
]

_UNRESOLVED = re.compile(r"Expected a dot import path string: (\S+)")
_KEY = re.compile(r'^(\s*)(?:- )?Parser key "([^"]+)":')
#: A nested parser's explanation (every registry message points to 'diffkit list').
_EXPLAINED = re.compile(r'^(\s*)(?:- )?Parser key "([^"]+)": (\S.*\'diffkit list.*)$')
#: Config keys that name a kind differently from the kind itself.
_KEY_KINDS = {"data": "datamodule", "net": "denoiser", "network": "denoiser"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" -"))


def _key_path(lines: list[str], index: int) -> str:
    """The dotted parser key enclosing line ``index`` (``model.sde``), from nested diagnostics."""
    keys: list[str] = []
    level = _indent(lines[index])
    for j in range(index - 1, -1, -1):
        m = _KEY.match(lines[j])
        if m and _indent(lines[j]) < level:
            keys.insert(0, m.group(2))
            level = _indent(lines[j])
    return ".".join(keys)


def _kind_for(key: str, context: str, name: str) -> str | None:
    from diffkit.registry import REGISTRIES, suggest

    for part in reversed([p for p in key.split(".") if p not in ("init_args", "class_path")]):
        part = re.sub(r"\[?\d+\]?$", "", part)
        part = _KEY_KINDS.get(part, part)
        for kind, registry in REGISTRIES.items():
            if part in (kind, registry.group.rsplit(".", 1)[-1]):
                return kind
        break
    for kind, registry in REGISTRIES.items():  # a base class named in the Union diagnostics
        module, _, attr = registry.base.partition(":")
        if f"{module}.{attr}" in context:
            return kind
    close = [k for k, r in REGISTRIES.items() if name in r.names() or suggest(name, r.names())]
    return close[0] if len(close) == 1 else None


def _explain(kind: str | None, name: str) -> str:
    from diffkit.registry import REGISTRIES, RegistryError

    if kind is None:
        return (
            f"Unknown name '{name}': no registered part is called so. Give a full class path "
            "(package.module.Class); see 'diffkit list'."
        )
    registry = REGISTRIES[kind]
    try:
        registry.alias(name)
    except RegistryError as exc:
        return str(exc)
    return (
        f"{kind} '{name}' is registered but was not visible when the parser was built; call "
        "diffkit.registry.materialize_all() first, or give "
        f"class_path: {registry.alias_module}.{name}; see 'diffkit list {kind}'"
    )


def explain_unknown_names(message: str) -> str | None:
    """The registry's explanation of every unresolved short name in a jsonargparse error
    message, one ``Parser key "model.sde": ...`` line each, or ``None`` if there is none.

    Nested parsers (subclass mode) already explain their own keys; their one-line explanations
    are lifted out of the enclosing diagnostics and given the full key path.
    """
    lines = message.splitlines()
    out: list[str] = []
    for i, line in enumerate(lines):
        inline = _EXPLAINED.match(line)
        raw = _UNRESOLVED.search(line)
        if inline is not None:
            outer = _key_path(lines, i)
            key = f"{outer}.{inline.group(2)}" if outer else inline.group(2)
            text = f'Parser key "{key}": {inline.group(3)}'
        elif raw is not None and "." not in raw.group(1):
            name = raw.group(1)
            key = _key_path(lines, i)
            start = max((j for j in range(i) if _KEY.match(lines[j])), default=0)
            text = f'Parser key "{key}": ' if key else ""
            text += _explain(_kind_for(key, "\n".join(lines[start : i + 1]), name), name)
        else:
            continue
        if text not in out:
            out.append(text)
    return "\n".join(out) or None


#: Spellings of non-finite numbers that jsonargparse leaves as strings (YAML's are ``.inf``).
_NON_FINITE = r"[-+]?(?:nan|inf|infinity)"
_GOT_NON_FINITE = re.compile(rf"(?:Got|Given) value: ({_NON_FINITE})\.?\s*$", re.IGNORECASE)
_NAME_NON_FINITE = re.compile(
    rf'Parser key "([^"]+)": Unknown name \'({_NON_FINITE})\'', re.IGNORECASE
)
_FINITE_TAIL = "but it must be a finite number (such as 0.5 or 1e-3)"
#: A nested parser's own explanation, lifted out with the full key path.
_EXPLAINED_NON_FINITE = re.compile(rf'Parser key "([^"]+)": got \'({_NON_FINITE})\', but', re.I)


def explain_non_finite(message: str) -> str | None:
    """``Parser key "model.sde.beta_max": got 'inf', but it must be a finite number`` when a
    jsonargparse error message rejects a nan/inf spelling, else ``None``."""
    lines = message.splitlines()
    for i, line in enumerate(lines):
        inner = _NAME_NON_FINITE.search(line) or _EXPLAINED_NON_FINITE.search(line)
        got = _GOT_NON_FINITE.search(line)
        if inner is None and got is None:
            continue
        keys = [k for k in (_key_path(lines, i), inner.group(1) if inner else "") if k]
        own = _KEY.match(line)
        if own and inner is None:
            keys.append(own.group(2))
        value = inner.group(2) if inner else got.group(1)  # type: ignore[union-attr]
        key = ".".join(keys)
        where = f'Parser key "{key}": ' if key else ""
        return f"{where}got '{value}', {_FINITE_TAIL}"
    return None


class ShortNameErrors:
    """Mixin for jsonargparse parsers: :meth:`error` explains unknown short names and rejected
    non-finite numbers."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        explained = explain_non_finite(message) or explain_unknown_names(message)
        super().error(explained if explained is not None else message, ex)  # type: ignore[misc]

    def print_usage(self, file=None) -> None:
        """One usage line: LightningCLI's full usage runs to dozens of lines and would bury the
        error message under it (``--help`` still prints everything)."""
        prog = self.prog.replace(" [options]", "")  # type: ignore[attr-defined]
        (file or sys.stderr).write(f"usage: {prog} [options]\n")


class ShortNameArgumentParser(ShortNameErrors, ArgumentParser):
    """A plain ``jsonargparse.ArgumentParser`` with short-name errors (scripts, tests)."""


class DiffkitArgumentParser(ShortNameErrors, LightningArgumentParser):
    """LightningCLI's parser with short-name errors; pass it as ``parser_class``."""
