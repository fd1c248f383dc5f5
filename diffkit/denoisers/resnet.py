"""Pre-norm residual MLP for vector data (docs/background/denoisers.md#resnet).

With ``e = MLP(emb(c_noise))`` (plus a class embedding when conditioned),
``h_0 = W_in x``, and per block

``h_l = h_{l-1} + W_{l,2} Drop(phi(LN(W_{l,1} phi(LN(h_{l-1})) + U_l e))),``

the output is ``W_out phi(LN(h_L)) + W_skip x`` with ``W_out`` and ``W_skip`` zero-initialised,
so the initial prediction is 0. The final LayerNorm bounds the first term, so without the
linear skip the network could not follow targets that grow linearly in the input far from the
data (at high noise the exact eps is about ``u``); its under-prediction there is amplified by
``1 / alpha_T`` in the implied ``x0`` and sent deterministic samplers' tail draws far away.
The time embedding enters *every* block (unlike BE24 eq. 6, which adds it once to the input).
States ``(B, *state_shape)`` are flattened to ``(B, D)`` and the output reshaped to
``(B, *output_shape)``, so the same network serves vectors, small images and CLD states.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.embeddings import EmbeddingKind, TimeEmbedding

__all__ = ["ResNetMLP"]


class ClassEmbedding(nn.Module):
    """Class labels ``(B,)`` to ``(B, dim)``; ``None`` or negative labels map to a learned
    "no class" row (index ``num_classes``), which classifier-free guidance uses."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if cond is None:
            idx = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        else:
            idx = cond.to(device=device, dtype=torch.long).reshape(-1)
            if idx.numel() != batch:
                raise ValueError(f"cond must have shape ({batch},), got {tuple(cond.shape)}")
            if bool((idx >= self.num_classes).any()):
                raise ValueError(
                    f"class labels must be < num_classes = {self.num_classes}, "
                    f"got max {int(idx.max())}"
                )
            idx = torch.where(idx < 0, torch.full_like(idx, self.num_classes), idx)
        return self.table(idx)


class ResidualBlock(nn.Module):
    """One pre-norm residual block with the time embedding injected."""

    def __init__(self, width: int, emb_width: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.emb = nn.Linear(emb_width, width)
        self.norm2 = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h: Tensor, e: Tensor) -> Tensor:
        a = self.fc1(self.act(self.norm1(h))) + self.emb(e)
        return h + self.fc2(self.drop(self.act(self.norm2(a))))


class ResNetMLP(Denoiser):
    """Residual MLP denoiser.

    Args:
        spec: shapes (injected by the module).
        width: hidden width H.
        depth: number of residual blocks L.
        emb_dim: width of the raw noise embedding (the embedding MLP outputs ``2 emb_dim``).
        embedding: ``sinusoidal`` or ``fourier``.
        fourier_scale: frequency scale of the Fourier embedding.
        dropout: dropout rate inside the blocks.

    Parameters: about ``D H + L (2 H^2 + 2 E H) + H D_out + D D_out`` plus the embedding MLP.
    """

    def __init__(
        self,
        spec: DenoiserSpec,
        /,
        width: int = 256,
        depth: int = 4,
        emb_dim: int = 128,
        embedding: EmbeddingKind = "sinusoidal",
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(spec)
        if width < 1 or depth < 0:
            raise ValueError(f"ResNetMLP needs width >= 1 and depth >= 0, got {width}, {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ResNetMLP.dropout must be in [0, 1), got {dropout}")
        d_in = math.prod(spec.state_shape)
        d_out = math.prod(spec.output_shape)
        e = 2 * emb_dim
        self.time_embed = TimeEmbedding(embedding, emb_dim, e, fourier_scale=fourier_scale)
        self.class_embed = (
            ClassEmbedding(spec.num_classes, e) if spec.num_classes is not None else None
        )
        self.inp = nn.Linear(d_in, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, e, dropout) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, d_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.skip = nn.Linear(d_in, d_out, bias=False)  # linear path, see the module docstring
        nn.init.zeros_(self.skip.weight)
        self.act = nn.SiLU()

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """``u``: ``(B, *state_shape)``; ``c_noise``: ``(B,)`` -> ``(B, *output_shape)``."""
        b = u.shape[0]
        if tuple(u.shape[1:]) != tuple(self.spec.state_shape):
            raise ValueError(
                f"ResNetMLP built for states {self.spec.state_shape}, got {tuple(u.shape[1:])}"
            )
        e = self.time_embed(c_noise)
        if self.class_embed is not None:
            e = e + self.class_embed(cond, b, u.device)
        flat = u.reshape(b, -1)
        h = self.inp(flat)
        for block in self.blocks:
            h = block(h, e)
        y = self.out(self.act(self.norm_out(h))) + self.skip(flat)
        return y.reshape(b, *self.spec.output_shape)
