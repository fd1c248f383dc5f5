"""Training losses: denoising score matching for any linear SDE and CLD hybrid score matching.

Public classes are re-exported lazily (PEP 562), so ``diffkit.losses.DenoisingScoreMatching`` is a
valid short class path while ``import diffkit.losses`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Loss": "diffkit.losses.base",
    "LossOutput": "diffkit.losses.base",
    "DenoisingScoreMatching": "diffkit.losses.dsm",
    "HybridScoreMatching": "diffkit.losses.hsm",
    "sample_time": "diffkit.losses.time_sampling",
    "eps_weight": "diffkit.losses.weighting",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffkit.losses' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
