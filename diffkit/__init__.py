"""diffkit: diffusion models on PyTorch Lightning.

Importing ``diffkit`` is cheap: it imports neither torch nor any plugin. Parts live in
registries (``diffkit.registry``) and in their kind's subpackage (``diffkit.sdes``, ...).
Time runs from 0 (data) to T (noise) everywhere.
"""

__version__ = "0.1.0"
