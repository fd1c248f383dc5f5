"""Short-name alias classes, one module per kind (``diffkit.aliases.sdes``, ...).

Never give this package a ``__getattr__``: jsonargparse probes parent packages when it shortens
import paths, and only the kind modules serve names.
"""
