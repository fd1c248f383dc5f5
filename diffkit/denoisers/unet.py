"""DDPM / NCSN++-style U-Net for images [Ho+20, 2006.11239; Song+21, 2011.13456; ADM, 2105.05233;
U-Net, 1505.04597] (docs/background/denoisers.md#unet).

Layout: ``conv_in`` 3x3 -> per level ``num_res_blocks`` residual blocks (+ self-attention at the
resolutions in ``attn_resolutions``) and a stride-2 downsample (except at the last level) ->
middle (ResBlock, Attention, ResBlock) -> per level in reverse ``num_res_blocks + 1`` residual
blocks on concatenated skips (+ attention) and a nearest-neighbour upsample with a 3x3 conv ->
GroupNorm, SiLU, zero-initialised 3x3 conv.

ResBlock: ``h = conv(SiLU(GN(x))); h += Linear(SiLU(e)); h = conv(Drop(SiLU(GN(h))));
return (skip(x) + h) [/ sqrt 2]``; optional ADM scale-shift norm ``GN(h) (1 + a) + b``.

States: ``(B, C, H, W)``, or CLD's ``(B, 2, C, H, W)``, which is read as ``2C`` channels; the
output has ``prod(output_shape[:-2])`` channels reshaped to ``output_shape`` (CLD HSM: ``C``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.embeddings import EmbeddingKind, TimeEmbedding
from diffkit.denoisers.resnet import ClassEmbedding

__all__ = ["UNet", "unet_cifar10", "unet_small"]


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count ``<= max_groups`` dividing ``channels``."""
    g = max(d for d in range(1, min(max_groups, channels) + 1) if channels % d == 0)
    return nn.GroupNorm(g, channels)


class ResBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        emb_dim: int,
        dropout: float,
        scale_shift: bool,
        skip_rescale: bool,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out if scale_shift else c_out)
        self.norm2 = group_norm(c_out)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.scale_shift, self.skip_rescale = scale_shift, skip_rescale
        self.act = nn.SiLU()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        emb = self.emb(self.act(e))[:, :, None, None]
        if self.scale_shift:
            a, b = emb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + a) + b
        else:
            # Added after the norm: GroupNorm removes a per-channel constant within each group,
            # so an embedding added before it is lost entirely when a group holds one channel.
            h = self.norm2(h) + emb
        h = self.conv2(self.drop(self.act(h)))
        out = self.skip(x) + h
        return out / math.sqrt(2.0) if self.skip_rescale else out


class Attention(nn.Module):
    """Multi-head self-attention over the ``H W`` positions, zero-initialised projection."""

    def __init__(self, channels: int, num_heads: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"UNet.num_heads = {num_heads} must divide the attention width {channels}"
            )
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.heads = num_heads

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.mT, k.mT, v.mT)  # (b, heads, hw, c/heads)
        return x + self.proj(out.mT.reshape(b, c, h, w))


class Downsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(Denoiser):
    """U-Net denoiser for ``(C, H, W)`` data (and CLD states ``(2, C, H, W)``).

    Args:
        spec: shapes (injected by the module).
        channels: base width ``ch``.
        channel_mult: width multipliers per level.
        num_res_blocks: residual blocks per level on the way down.
        attn_resolutions: feature-map sizes (height) with self-attention.
        dropout: dropout in the residual blocks.
        num_heads: attention heads.
        embedding: noise embedding (``sinusoidal`` or ``fourier``).
        fourier_scale: frequency scale of the Fourier embedding.
        scale_shift_norm: ADM's ``GN(h) (1 + a) + b`` time injection instead of addition.
        skip_rescale: divide residual sums by ``sqrt 2`` (DDPM++/NCSN++).
    """

    def __init__(
        self,
        spec: DenoiserSpec,
        /,
        channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: tuple[int, ...] = (16,),
        dropout: float = 0.0,
        num_heads: int = 1,
        embedding: EmbeddingKind = "sinusoidal",
        fourier_scale: float = 16.0,
        scale_shift_norm: bool = False,
        skip_rescale: bool = False,
    ) -> None:
        super().__init__(spec)
        state, out_shape = tuple(spec.state_shape), tuple(spec.output_shape)
        if len(state) < 3 or len(out_shape) < 3:
            raise ValueError(
                f"UNet needs image states (C, H, W) or (2, C, H, W), got state_shape {state}; "
                "use the 'resnet' denoiser for vector data"
            )
        if out_shape[-2:] != state[-2:]:
            raise ValueError(f"UNet output {out_shape} must have the state's size {state[-2:]}")
        height, width = state[-2:]
        levels = len(channel_mult)
        if levels < 1 or channels < 1 or num_res_blocks < 1:
            raise ValueError(
                "UNet needs channel_mult non-empty, channels >= 1, num_res_blocks >= 1"
            )
        factor = 2 ** (levels - 1)
        if height % factor or width % factor:
            raise ValueError(
                f"UNet with {levels} levels halves the image {levels - 1} times, so H and W must "
                f"be divisible by {factor}; got {height}x{width}: shorten channel_mult"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet.dropout must be in [0, 1), got {dropout}")
        c_in = math.prod(state[:-2])
        c_out = math.prod(out_shape[:-2])
        emb_dim = 4 * channels
        self.time_embed = TimeEmbedding(embedding, channels, emb_dim, fourier_scale=fourier_scale)
        self.class_embed = (
            ClassEmbedding(spec.num_classes, emb_dim) if spec.num_classes is not None else None
        )

        def block(a: int, b: int) -> ResBlock:
            return ResBlock(a, b, emb_dim, dropout, scale_shift_norm, skip_rescale)

        self.conv_in = nn.Conv2d(c_in, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        ch, res = channels, height
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layer = nn.ModuleList([block(ch, channels * mult)])
                ch = channels * mult
                if res in attn_resolutions:
                    layer.append(Attention(ch, num_heads))
                self.down.append(layer)
                skips.append(ch)
            if level != levels - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        self.mid = nn.ModuleList([block(ch, ch), Attention(ch, num_heads), block(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                layer = nn.ModuleList([block(ch + skips.pop(), channels * mult)])
                ch = channels * mult
                if res in attn_resolutions:
                    layer.append(Attention(ch, num_heads))
                self.up.append(layer)
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
                res *= 2
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, c_out, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.act = nn.SiLU()

    @staticmethod
    def _run(layer: nn.ModuleList, h: Tensor, e: Tensor) -> Tensor:
        for m in layer:
            h = m(h, e) if isinstance(m, ResBlock) else m(h)
        return h

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        """``u``: ``(B, *state_shape)``; ``c_noise``: ``(B,)`` -> ``(B, *output_shape)``."""
        b = u.shape[0]
        if tuple(u.shape[1:]) != tuple(self.spec.state_shape):
            raise ValueError(
                f"UNet built for states {self.spec.state_shape}, got {tuple(u.shape[1:])}"
            )
        e = self.time_embed(c_noise)
        if self.class_embed is not None:
            e = e + self.class_embed(cond, b, u.device)
        h = self.conv_in(u.reshape(b, -1, *u.shape[-2:]))
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, e)
            hs.append(h)
        for m in self.mid:
            h = m(h, e) if isinstance(m, ResBlock) else m(h)
        for layer in self.up:
            if isinstance(layer[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self._run(layer, h, e)
        h = self.conv_out(self.act(self.norm_out(h)))
        return h.reshape(b, *self.spec.output_shape)


def unet_cifar10(spec: DenoiserSpec, /, dropout: float = 0.1) -> UNet:
    """DDPM's CIFAR-10 U-Net (ch 128, mult (1, 2, 2, 2), 2 blocks, attention at 16; ~35.7M)."""
    return UNet(
        spec,
        channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16,),
        dropout=dropout,
    )


def unet_small(spec: DenoiserSpec, /, channels: int = 32, dropout: float = 0.0) -> UNet:
    """A CPU-trainable U-Net for 8x8 digits / MNIST-size data (mult (1, 2), 1 block, attention
    at the lowest resolution)."""
    h = spec.state_shape[-2]
    return UNet(
        spec,
        channels=channels,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(h // 2,),
        dropout=dropout,
    )
