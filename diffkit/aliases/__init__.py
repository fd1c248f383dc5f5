"""Short-name alias classes, one module per kind: ``diffkit.aliases.sdes.vp``, ...

Saved configs record these paths. Importing this package creates the kind modules (see
:func:`diffkit.registry.install_alias_modules`); this package itself has no ``__getattr__``,
because jsonargparse probes parent packages when it shortens import paths.
"""

from diffkit.registry import install_alias_modules

install_alias_modules()
