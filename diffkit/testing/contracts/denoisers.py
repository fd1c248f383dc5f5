"""Contract checks every :class:`~diffkit.denoisers.base.Denoiser` (built-in or plugin) must pass.

A denoiser is built from a :class:`~diffkit.denoisers.base.DenoiserSpec` and maps
``(u (B, *state_shape), c_noise (B,), cond (B,) | None)`` to ``(B, *output_shape)``. The checks:

1. **shapes** for batch sizes 1 and 3;
2. **dtype**: float32 in, float32 out; after ``.double()``, float64 in, float64 out;
3. **conditioning**: the output depends on ``c_noise`` and, with ``num_classes``, on the class
   labels; ``cond=None`` (unconditional) is accepted;
4. **gradient flow**: every parameter is reached by the gradient of the output (finite, and
   non-zero somewhere), so no sub-network is detached.

The conditioning and gradient checks first perturb every parameter (a zero-initialised output
layer would otherwise hide the dependence). :class:`DenoiserContract` bundles them for pytest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from diffkit.denoisers.base import DenoiserSpec

__all__ = ["DenoiserContract", "check_denoiser"]


def _inputs(spec: DenoiserSpec, batch: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    u = torch.randn((batch, *spec.state_shape), generator=g)
    c_noise = torch.rand(batch, generator=g)
    return u, c_noise


def _perturb(net: nn.Module, g: torch.Generator) -> None:
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def check_denoiser(make: Callable[[DenoiserSpec], nn.Module], spec: DenoiserSpec) -> None:
    """Run every denoiser check on ``make(spec)`` (use tiny shapes)."""
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # initialisation independent of the caller's global RNG state
        net = make(spec)
    name = type(net).__name__
    net.eval()
    cond = None if spec.num_classes is None else torch.arange(3) % spec.num_classes
    with torch.no_grad():
        for batch in (1, 3):
            u, c = _inputs(spec, batch, g)
            out = net(u, c, None if cond is None else cond[:batch])
            want = (batch, *spec.output_shape)
            if tuple(out.shape) != want:
                raise AssertionError(f"{name}: output shape {tuple(out.shape)}, expected {want}")
            if out.dtype != torch.float32 or not torch.isfinite(out).all():
                raise AssertionError(f"{name}: float32 input gave {out.dtype} or non-finite output")
        _perturb(net, g)
        base = net(u, c, cond)
        if torch.allclose(net(u, c + 0.5, cond), base):
            raise AssertionError(f"{name}: the output ignores c_noise (the noise level)")
        if cond is not None:
            if torch.allclose(net(u, c, (cond + 1) % spec.num_classes), base):
                raise AssertionError(f"{name}: the output ignores the class labels")
            net(u, c, None)
    net.train()
    net(u, c, cond).pow(2).mean().backward()
    bad = [
        n
        for n, p in net.named_parameters()
        if p.requires_grad
        and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0)
    ]
    if bad:
        raise AssertionError(f"{name}: no (finite, non-zero) gradient reaches {bad}")
    net.eval().double()
    with torch.no_grad():
        out64 = net(u.double(), c.double(), cond)
    if out64.dtype != torch.float64:
        raise AssertionError(f"{name}.double(): float64 input gave {out64.dtype} output")


class DenoiserContract:
    """Base class of pytest contract tests for a denoiser.

    Subclass it as ``class TestMyNet(DenoiserContract)`` and set ``make_denoiser`` (a factory
    ``DenoiserSpec -> Denoiser`` with small settings) and ``spec`` (tiny shapes; set
    ``num_classes`` to check conditioning).
    """

    make_denoiser: ClassVar[Callable[[DenoiserSpec], nn.Module]]
    spec: ClassVar[DenoiserSpec] = DenoiserSpec((3,), (3,), (3,), num_classes=2)

    def test_denoiser_contract(self) -> None:
        check_denoiser(type(self).make_denoiser, self.spec)
