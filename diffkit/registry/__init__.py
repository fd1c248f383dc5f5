"""Registries of named parts (one per kind), entry-point plugins and short-name aliases.

``import diffkit.registry`` imports neither torch nor any plugin::

    from diffkit.registry import SDES
    SDES.get("vp")                 # imports diffkit.sdes.vp only
    SDES.create("vp", beta_max=10)
    SDES.get("diffkit_example.sdes:SubVPSDE")   # a full path always works

Kinds: ``sde denoiser sampler loss metric datamodule callback``; plugins declare entry points in
the groups ``diffkit.sdes``, ``diffkit.denoisers``, ... (see :mod:`diffkit.registry.kinds`).
"""

from __future__ import annotations

from diffkit.registry.aliases import materialize_all
from diffkit.registry.entry_points import DISABLE_ENV, PluginEntry, reset_scan_cache
from diffkit.registry.errors import (
    AmbiguousNameError,
    BrokenEntryError,
    PluginShadowWarning,
    RegistryError,
    UnknownNameError,
    WrongKindError,
)
from diffkit.registry.kinds import (
    CALLBACKS,
    DATAMODULES,
    DENOISERS,
    KINDS,
    LOSSES,
    METRICS,
    REGISTRIES,
    SAMPLERS,
    SDES,
    KindSpec,
    plugin_distributions,
)
from diffkit.registry.registry import (
    NAME_PATTERN,
    STATUSES,
    Entry,
    LoadFailure,
    Registry,
    reset_plugin_state,
)

__all__ = [
    "CALLBACKS",
    "DATAMODULES",
    "DENOISERS",
    "DISABLE_ENV",
    "KINDS",
    "LOSSES",
    "METRICS",
    "NAME_PATTERN",
    "REGISTRIES",
    "SAMPLERS",
    "SDES",
    "STATUSES",
    "AmbiguousNameError",
    "BrokenEntryError",
    "Entry",
    "KindSpec",
    "LoadFailure",
    "PluginEntry",
    "PluginShadowWarning",
    "Registry",
    "RegistryError",
    "UnknownNameError",
    "WrongKindError",
    "materialize_all",
    "plugin_distributions",
    "reset_plugin_state",
    "reset_scan_cache",
]
