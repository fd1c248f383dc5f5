"""Alias classes for sampler short names (see :mod:`diffkit.registry.aliases`).

``diffkit.aliases.samplers.<name>`` is the sampler registered as
``<name>``; configs saved by the CLI record these paths.

Module attributes are private on purpose: every public attribute is a short name.
"""

_KIND = "sampler"
_BUILDING: set = set()


def _make(name, target, func_return):
    # class_from_function attaches the class to its caller's module, i.e. this one.
    from jsonargparse import class_from_function

    return class_from_function(target, func_return=func_return, name=name)


def _build(name, target, func_return):
    from diffkit.registry.aliases import build_alias

    return build_alias(_make, _BUILDING, name, target, func_return)


def __getattr__(name):
    from diffkit.registry.aliases import resolve_alias

    return resolve_alias(_KIND, name, _BUILDING)
