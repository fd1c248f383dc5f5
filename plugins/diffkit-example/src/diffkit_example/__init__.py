"""diffkit-example: a diffkit plugin shipping the sub-VP SDE and an ancestral sampler.

Importing this package has no side effects: diffkit finds the parts through the entry points
declared in ``pyproject.toml`` (``diffkit.sdes: subvp``, ``diffkit.samplers: ancestral``) and
imports a module only when its name is used.
"""

__version__ = "0.1.0"
