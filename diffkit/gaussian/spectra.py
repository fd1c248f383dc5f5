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
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SPECTRA",
    "cifar10_spectrum",
    "compress",
    "empirical_spectrum",
    "grf32_spectrum",
    "load_spectrum",
]


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
    """A built-in spectrum by name, or variances from a ``.npy`` file, float64 in the array's
    shape (``(d,)`` eigenvalues; ``(C, H, W)`` DCT-frequency variances for blurring). Raises
    ``ValueError`` for a missing file or negative / non-finite values."""
    if str(spec) in SPECTRA:
        return SPECTRA[str(spec)]()
    path = Path(spec)
    if not path.is_file():
        raise ValueError(
            f"spectrum {str(spec)!r} is neither a built-in ({', '.join(SPECTRA)}) nor an "
            "existing .npy file of eigenvalues"
        )
    try:
        lam = torch.from_numpy(np.atleast_1d(np.asarray(np.load(path), dtype=np.float64)))
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


def empirical_spectrum(datamodule: Any, max_samples: int = 50_000) -> Tensor:
    """Eigenvalues ``(d,)`` float64 (descending) of the empirical covariance of a datamodule's
    training split (at most ``max_samples`` examples, in loader order; ``d`` up to 16384).

    The datamodule is set up for fitting and read through its ``train_dataloader`` (batches
    ``{"x": (B, *data_shape)}``); the covariance is centred (the grid optimiser models the data
    as ``N(0, C)``: a mean only shifts the output law, it does not change its covariance).
    """
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples}")
    datamodule.setup("fit")
    chunks, n = [], 0
    for batch in datamodule.train_dataloader():
        x = batch["x"] if isinstance(batch, dict) else batch[0]
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        chunks.append(x[: max_samples - n])
        n += chunks[-1].shape[0]
        if n >= max_samples:
            break
    if n < 2:
        raise ValueError(f"the training split of {type(datamodule).__name__} has < 2 examples")
    x = torch.cat(chunks)
    if x.shape[1] > 16384:
        raise ValueError(
            f"{type(datamodule).__name__}: data of dimension {x.shape[1]} is too large for a "
            "dense covariance; compute its spectrum offline and pass it with --spectrum FILE.npy"
        )
    x = x - x.mean(0)
    cov = x.T @ x / (x.shape[0] - 1)
    return torch.linalg.eigvalsh(cov).flip(0).clamp_min(0.0)
