"""Registry errors, with messages that name what was given, what exists and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "AmbiguousNameError",
    "BrokenEntryError",
    "PluginShadowWarning",
    "RegistryError",
    "UnknownNameError",
    "WrongKindError",
    "suggest",
]


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
    out: list[str] = []
    for c in exact + close:
        if c not in out and c != name:
            out.append(c)
    return out[:n]


def did_you_mean(matches: Sequence[str]) -> str:
    """``"Did you mean 'vp'? "`` (or ``'a' or 'b'``), or an empty string."""
    if not matches:
        return ""
    quoted = [f"'{m}'" for m in matches]
    text = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f"Did you mean {text}? "
