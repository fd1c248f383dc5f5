"""U-Net: shapes (images, CLD states, velocity output), gradients, determinism, presets."""

from __future__ import annotations

import pytest
import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.unet import UNet, unet_cifar10, unet_small


def _tiny(spec: DenoiserSpec) -> UNet:
    return UNet(spec, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,))


@pytest.mark.parametrize(
    ("data", "state", "out"),
    [
        ((1, 8, 8), (1, 8, 8), (1, 8, 8)),
        ((3, 8, 8), (2, 3, 8, 8), (3, 8, 8)),  # CLD HSM: velocity half
        ((3, 8, 8), (2, 3, 8, 8), (2, 3, 8, 8)),  # CLD DSM: full state
    ],
)
def test_unet_shapes_gradients_determinism(data, state, out) -> None:
    torch.manual_seed(0)
    net = _tiny(DenoiserSpec(data, state, out, num_classes=4)).eval()
    with torch.no_grad():  # break the zero initialisations so every path carries gradient
        for p in net.parameters():
            if p.dim() > 1 and not p.abs().sum():
                p.normal_(0.0, 0.05)
    u = torch.randn(3, *state)
    c = torch.rand(3)
    y = net(u, c, torch.tensor([0, 3, -1]))
    assert y.shape == (3, *out)
    torch.testing.assert_close(net(u, c, torch.tensor([0, 3, -1])), y, rtol=0, atol=0)
    # samples are independent (GroupNorm, not BatchNorm)
    torch.testing.assert_close(net(u[:1], c[:1], torch.tensor([0])), y[:1], rtol=1e-5, atol=1e-6)
    net.train()
    net(u, c, torch.tensor([0, 1, 2])).square().sum().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert net.conv_in.weight.grad.abs().sum() > 0
    assert net.class_embed.table.weight.grad.abs().sum() > 0


def test_unet_zero_init_output() -> None:
    net = _tiny(DenoiserSpec((1, 8, 8), (1, 8, 8), (1, 8, 8)))
    assert torch.equal(net(torch.randn(2, 1, 8, 8), torch.rand(2)), torch.zeros(2, 1, 8, 8))


def test_unet_refusals() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        UNet(DenoiserSpec((1, 6, 6), (1, 6, 6), (1, 6, 6)), channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="resnet"):
        UNet(DenoiserSpec((2,), (2,), (2,)))


def test_presets_parameter_counts() -> None:
    spec = DenoiserSpec((3, 32, 32), (3, 32, 32), (3, 32, 32))
    big = unet_cifar10(spec)
    n = sum(p.numel() for p in big.parameters())
    assert isinstance(big, UNet) and 35.0e6 < n < 36.5e6  # DDPM CIFAR-10: 35.7M
    small = unet_small(DenoiserSpec((1, 8, 8), (1, 8, 8), (1, 8, 8)))
    assert isinstance(small, UNet) and sum(p.numel() for p in small.parameters()) < 1e6
    assert unet_cifar10.__annotations__["return"] in ("UNet", UNet)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_resblock_keeps_the_embedding_with_one_channel_per_group(scale_shift: bool) -> None:
    """GroupNorm removes a per-channel constant within a group; with 8 channels in 8 groups an
    embedding added before the norm would vanish, so the block must inject it after."""
    from diffkit.denoisers.unet import ResBlock

    torch.manual_seed(0)
    block = ResBlock(8, 8, 16, 0.0, scale_shift, False).eval()
    assert block.norm2.num_groups == 8
    with torch.no_grad():
        block.conv2.weight.normal_(0.0, 0.1)  # undo the zero initialisation
    x, e = torch.randn(2, 8, 4, 4), torch.randn(1, 16)
    with torch.no_grad():
        change = (block(x, e.expand(2, 16)) - block(x, (e + 1.0).expand(2, 16))).abs().max()
    assert change > 1e-2
