"""Alias classes for sde short names (see :mod:`diffkit.registry.aliases`).

``diffkit.aliases.sdes.<name>`` is the sde registered as ``<name>``; configs saved by
the CLI record these paths. Every public attribute is a short name.
"""

from diffkit.registry.aliases import alias_hooks as _alias_hooks


def _make(name, target, func_return):  # must live here: the class joins its caller's module
    from jsonargparse import class_from_function

    return class_from_function(target, func_return=func_return, name=name)


__getattr__, _build = _alias_hooks("sde", _make)
