"""Embeddings of the noise condition ``c_noise`` (docs/background/denoisers.md#noise-conditioning).

Both embeddings map ``c`` of shape ``(B,)`` to ``(B, dim)``, computed in float64 and returned in
the dtype of the module's parameters (float32 by default).

* :class:`SinusoidalEmbedding` [Transformer, 1706.03762; Ho+20, 2006.11239]:
  ``[sin(c w_0), ..., sin(c w_{h-1}), cos(c w_0), ..., cos(c w_{h-1})]`` with ``h = dim / 2``
  geometric frequencies ``w_k = max_freq (min_freq / max_freq)^(k / h)``. With
  ``max_freq = 1`` and ``min_freq = 1e-4`` this is exactly ``w_k = 10000^(-2k / dim)``.
  The default range ``[1e-3, 1e3]`` spans six decades, so conditions of very different scales
  (``t`` in ``[0, 1]``, ``999 t``, ``log sigma``) all land on useful frequencies.
* :class:`FourierEmbedding` [Tancik+20, 2006.10739; NCSN++]: fixed random frequencies
  ``W ~ N(0, scale^2)``, ``[sin(2 pi W c), cos(2 pi W c)]``; the frequencies are drawn from a
  ``torch.Generator`` seeded by ``seed`` (never the global RNG) and stored as a buffer.

:class:`TimeEmbedding` adds the usual MLP ``Linear(dim, out) -> SiLU -> Linear(out, out)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["EmbeddingKind", "FourierEmbedding", "SinusoidalEmbedding", "TimeEmbedding"]

EmbeddingKind = Literal["sinusoidal", "fourier"]


def _check_dim(dim: int, who: str) -> None:
    if dim < 2 or dim % 2:
        raise ValueError(f"{who}.dim must be an even integer >= 2, got {dim}")


class SinusoidalEmbedding(nn.Module):
    """Deterministic sinusoidal embedding with geometric frequencies.

    Args:
        dim: even output width.
        min_freq: lowest angular frequency.
        max_freq: highest angular frequency.
    """

    def __init__(self, dim: int = 128, min_freq: float = 1e-3, max_freq: float = 1e3) -> None:
        super().__init__()
        _check_dim(dim, "SinusoidalEmbedding")
        if not 0 < min_freq <= max_freq:
            raise ValueError(
                f"SinusoidalEmbedding needs 0 < min_freq <= max_freq, got {min_freq}, {max_freq}"
            )
        half = dim // 2
        k = torch.arange(half, dtype=torch.float64)
        freqs = max_freq * (min_freq / max_freq) ** (k / half)
        self.dim = dim
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, c: Tensor) -> Tensor:
        """``c``: ``(B,)`` -> ``(B, dim)`` float32 (float64 if ``c`` is float64)."""
        arg = c.to(torch.float64).reshape(-1, 1) * self.freqs.to(torch.float64)
        out = torch.cat([arg.sin(), arg.cos()], dim=-1)
        return out.to(c.dtype if c.is_floating_point() else torch.float32)

    def _apply(self, fn, recurse: bool = True):  # keep the frequency table in float64
        out = super()._apply(fn, recurse)
        self.freqs = self.freqs.to(torch.float64)
        return out


class FourierEmbedding(nn.Module):
    """Gaussian random Fourier features (fixed, not trained).

    Args:
        dim: even output width.
        scale: standard deviation of the frequencies (16 in NCSN++ and CLD-SGM).
        seed: seed of the generator the frequencies are drawn from.
    """

    def __init__(self, dim: int = 128, scale: float = 16.0, seed: int = 0) -> None:
        super().__init__()
        _check_dim(dim, "FourierEmbedding")
        if scale <= 0:
            raise ValueError(f"FourierEmbedding.scale must be > 0, got {scale}")
        gen = torch.Generator().manual_seed(seed)
        w = torch.randn(dim // 2, generator=gen, dtype=torch.float64) * scale
        self.dim = dim
        self.register_buffer("freqs", w, persistent=True)

    def forward(self, c: Tensor) -> Tensor:
        """``c``: ``(B,)`` -> ``(B, dim)``."""
        arg = 2 * math.pi * c.to(torch.float64).reshape(-1, 1) * self.freqs.to(torch.float64)
        out = torch.cat([arg.sin(), arg.cos()], dim=-1)
        return out.to(c.dtype if c.is_floating_point() else torch.float32)

    def _apply(self, fn, recurse: bool = True):
        out = super()._apply(fn, recurse)
        self.freqs = self.freqs.to(torch.float64)
        return out


class TimeEmbedding(nn.Module):
    """Embedding followed by ``Linear(dim, out_dim) -> SiLU -> Linear(out_dim, out_dim)``.

    Args:
        kind: ``sinusoidal`` or ``fourier``.
        dim: width of the raw embedding.
        out_dim: output width (``4 dim`` in DDPM).
        fourier_scale: frequency scale of the Fourier features.
    """

    def __init__(
        self,
        kind: EmbeddingKind = "sinusoidal",
        dim: int = 128,
        out_dim: int = 512,
        fourier_scale: float = 16.0,
    ) -> None:
        super().__init__()
        if kind == "sinusoidal":
            self.embed: nn.Module = SinusoidalEmbedding(dim)
        elif kind == "fourier":
            self.embed = FourierEmbedding(dim, scale=fourier_scale)
        else:
            raise ValueError(f"time embedding kind must be 'sinusoidal' or 'fourier', got {kind!r}")
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, c: Tensor) -> Tensor:
        """``c``: ``(B,)`` -> ``(B, out_dim)`` in the MLP's dtype."""
        dtype = self.mlp[0].weight.dtype
        return self.mlp(self.embed(c.to(torch.float64)).to(dtype))
