"""Denoiser networks, their embeddings and bases, and the score-model wrapper.

Public classes are re-exported lazily (PEP 562), so ``diffkit.denoisers.ResNetMLP`` is a valid
short class path while ``import diffkit.denoisers`` stays cheap (tensorly is imported only with
:class:`TensorTrain`).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Denoiser": "diffkit.denoisers.base",
    "DenoiserSpec": "diffkit.denoisers.base",
    "Parameterization": "diffkit.denoisers.parameterization",
    "SinusoidalEmbedding": "diffkit.denoisers.embeddings",
    "FourierEmbedding": "diffkit.denoisers.embeddings",
    "TimeEmbedding": "diffkit.denoisers.embeddings",
    "ResNetMLP": "diffkit.denoisers.resnet",
    "UNet": "diffkit.denoisers.unet",
    "unet_cifar10": "diffkit.denoisers.unet",
    "unet_small": "diffkit.denoisers.unet",
    "LegendreBasis": "diffkit.denoisers.bases",
    "BSplineBasis": "diffkit.denoisers.bases",
    "TensorTrain": "diffkit.denoisers.tensor_train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffkit.denoisers' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
