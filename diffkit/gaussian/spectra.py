"""Covariance spectra used as Gaussian stand-ins for image data (float64).

* ``cifar10``: the 3072 eigenvalues of the empirical covariance of CIFAR-10 images scaled to
  [-1, 1] (trace 761.6), as published with the code of Pierret & Galerne, "Diffusion models for
  Gaussian distributions: exact solutions and Wasserstein errors" (arXiv 2405.14250). Shipped as
  package data (``diffkit/gaussian/data/cifar10_cov_eigenvalues.npy``, float32).
* ``grf32``: a synthetic Gaussian random field on 3 x 32 x 32 images, DCT-frequency variances
  ``100 / (1 + i^2 + j^2)^1.5`` (trace about 840.1, eigenvalues in [1.19e-3, 100]); diagonal in the
  DCT basis, so it also serves the blurring SDE.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["SPECTRA", "cifar10_spectrum", "compress", "grf32_spectrum", "load_spectrum"]


def cifar10_spectrum() -> Tensor:
    """``(3072,)`` CIFAR-10 covariance eigenvalues (pixels in [-1, 1]), float64, descending."""
    data = resources.files("diffkit.gaussian").joinpath("data/cifar10_cov_eigenvalues.npy")
    return torch.from_numpy(np.load(io.BytesIO(data.read_bytes())).astype(np.float64))


def grf32_spectrum() -> Tensor:
    """``(3, 32, 32)``: ``100 / (1 + i^2 + j^2)^1.5`` per channel and DCT frequency ``(i, j)``."""
    i = torch.arange(32, dtype=torch.float64)
    lam = 100.0 / (1 + i[:, None] ** 2 + i[None, :] ** 2) ** 1.5
    return lam.expand(3, 32, 32).clone()


#: Built-in spectra by name.
SPECTRA: dict[str, Callable[[], Tensor]] = {"cifar10": cifar10_spectrum, "grf32": grf32_spectrum}


def load_spectrum(spec: str | Path) -> Tensor:
    """A built-in spectrum by name, or eigenvalues from a ``.npy`` file (any shape, flattened),
    float64 ``(d,)``. Raises ``ValueError`` for a missing file or negative / non-finite values."""
    if str(spec) in SPECTRA:
        return SPECTRA[str(spec)]().reshape(-1)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"spectrum {str(spec)!r} is neither a built-in ({', '.join(SPECTRA)}) nor an "
            "existing .npy file of eigenvalues"
        )
    try:
        lam = torch.from_numpy(np.asarray(np.load(path), dtype=np.float64)).reshape(-1)
    except (ValueError, OSError) as err:
        raise ValueError(
            f"spectrum file {str(path)!r} is not a readable .npy array: {err}"
        ) from err
    if lam.numel() == 0 or not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
        raise ValueError(
            f"spectrum file {str(path)!r} must hold finite eigenvalues >= 0 (a covariance "
            "spectrum), got "
            + ("an empty array" if lam.numel() == 0 else f"min {float(lam.min()):g}")
        )
    return lam


def compress(lam: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct eigenvalues and their multiplicities ``((m,), (m,))``: samplers on scalar and
    CLD SDEs act identically on equal eigenvalues, so W2 and KL need each value once, weighted."""
    uniq, counts = torch.unique(lam.reshape(-1), return_counts=True)
    return uniq, counts.to(torch.float64)
