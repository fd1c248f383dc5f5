"""Forward SDEs: the linear-SDE interface, built-in SDEs, operators, time grids, exact scores.

Public classes are re-exported lazily (PEP 562), so ``diffkit.sdes.VPSDE`` is a valid short
class path while ``import diffkit.sdes`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LinearSDE": "diffkit.sdes.base",
    "ScalarSDE": "diffkit.sdes.base",
    "GaussianKernel": "diffkit.sdes.base",
    "LinearOp": "diffkit.sdes.operators",
    "DCTBasis": "diffkit.sdes.operators",
    "VPSDE": "diffkit.sdes.vp",
    "VESDE": "diffkit.sdes.ve",
    "CLDSDE": "diffkit.sdes.cld",
    "BlurSDE": "diffkit.sdes.blur",
    "GaussianMixture": "diffkit.sdes.exact",
    "Gaussian": "diffkit.sdes.exact",
    "Dirac": "diffkit.sdes.exact",
    "ExactScoreModel": "diffkit.sdes.exact",
    "time_grid": "diffkit.sdes.time_grids",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffkit.sdes' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
