"""Scanning installed distributions for diffkit entry points, without importing any plugin.

A scan reads only package metadata (``importlib.metadata``) and stores the target *strings*
with the providing distribution's name and version; targets are imported on use by the
registry. Results are cached per group until :func:`reset_scan_cache` (tests that build
distributions call it). ``DIFFKIT_DISABLE_PLUGIN_AUTOLOAD=1`` turns scanning off, like pytest's
``PYTEST_DISABLE_PLUGIN_AUTOLOAD``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = [
    "DISABLE_ENV",
    "PluginEntry",
    "autoload_disabled",
    "reset_scan_cache",
    "scan",
]

DISABLE_ENV = "DIFFKIT_DISABLE_PLUGIN_AUTOLOAD"

_CACHE: dict[str, tuple[PluginEntry, ...]] = {}


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


def autoload_disabled() -> bool:
    """Whether ``DIFFKIT_DISABLE_PLUGIN_AUTOLOAD`` is set to a true value."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def scan(group: str) -> tuple[PluginEntry, ...]:
    """Entry points of ``group`` in installed distributions (cached; empty when disabled)."""
    if autoload_disabled():
        return ()
    if group not in _CACHE:
        from importlib.metadata import entry_points

        found = []
        for ep in entry_points(group=group):
            dist = getattr(ep, "dist", None)
            name = dist.metadata["Name"] if dist is not None else "unknown"
            version = dist.version if dist is not None else "unknown"
            found.append(PluginEntry(group, ep.name, ep.value.strip(), name, version))
        _CACHE[group] = tuple(sorted(found, key=lambda e: (e.name, e.dist)))
    return _CACHE[group]


def reset_scan_cache() -> None:
    """Forget every scan (call after installing or faking a distribution)."""
    _CACHE.clear()
