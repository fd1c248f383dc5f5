"""ResNet-MLP and the time embeddings."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.embeddings import FourierEmbedding, SinusoidalEmbedding
from diffkit.denoisers.resnet import ResNetMLP


def test_sinusoidal_embedding_matches_transformer_formula() -> None:
    emb = SinusoidalEmbedding(8, min_freq=1e-4, max_freq=1.0)
    c = torch.tensor([0.0, 3.0, 250.0], dtype=torch.float64)
    w = torch.tensor([10000 ** (-2 * k / 8) for k in range(4)], dtype=torch.float64)
    ref = torch.cat([torch.sin(c[:, None] * w), torch.cos(c[:, None] * w)], -1)
    torch.testing.assert_close(emb(c), ref, rtol=1e-12, atol=1e-12)


def test_fourier_embedding_is_seeded_and_fixed() -> None:
    a, b = FourierEmbedding(16, seed=3), FourierEmbedding(16, seed=3)
    assert torch.equal(a.freqs, b.freqs) and not list(a.parameters())
    c = torch.tensor([0.25])
    out = a(c)
    torch.testing.assert_close(out[0, 0], torch.sin(2 * math.pi * a.freqs[0] * 0.25).float())
    with pytest.raises(ValueError, match="even"):
        FourierEmbedding(7)


@pytest.mark.parametrize(
    ("state", "output"), [((2,), (2,)), ((1, 4, 4), (1, 4, 4)), ((2, 3), (3,)), ((2, 3), (2, 3))]
)
def test_resnet_shapes_grad_determinism(state, output) -> None:
    spec = DenoiserSpec(output, state, output, num_classes=3)
    torch.manual_seed(0)
    net = ResNetMLP(spec, width=16, depth=2, emb_dim=8)
    torch.nn.init.normal_(net.out.weight)  # break the zero init to see gradients everywhere
    u = torch.randn(5, *state)
    c = torch.rand(5)
    y = net(u, c, torch.tensor([0, 1, 2, -1, 0]))
    assert y.shape == (5, *output)
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    torch.testing.assert_close(net(u, c, None), net(u, c, None), rtol=0, atol=0)
    # samples are processed independently
    torch.testing.assert_close(net(u[:2], c[:2]), net(u, c)[:2])


def test_resnet_zero_init_and_time_dependence() -> None:
    spec = DenoiserSpec((4,), (4,), (4,))
    torch.manual_seed(0)
    net = ResNetMLP(spec, width=16, depth=2)
    u = torch.randn(3, 4)
    assert torch.equal(net(u, torch.rand(3)), torch.zeros(3, 4))
    torch.nn.init.normal_(net.out.weight)
    assert not torch.allclose(net(u, torch.zeros(3)), net(u, torch.ones(3)))


def test_lazy_package_exports_resolve() -> None:
    import diffkit.denoisers as dn
    import diffkit.losses as ls

    for mod in (dn, ls):
        for name in mod.__all__:
            assert getattr(mod, name).__name__ == name
    with pytest.raises(AttributeError):
        _ = dn.NoSuchNet
