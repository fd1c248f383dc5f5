"""The training loss on a fixed pool of draws, as a quadratic function of the FTT's outputs.

Every diffkit loss is, for fixed ``(x_0, t, eps)``, a weighted squared error of an affine function
of the raw denoiser output (the parameterisation's conversions, the Gaussian residual and the
loss weights depend on ``t`` alone), so per sample

``l_b(y) = l_b(y_b) + g_b . (y - y_b) + 1/2 (y - y_b)^T H_b (y - y_b)``,

exactly, with ``y_b`` the current output, ``g_b`` the gradient and ``H_b`` the Hessian
``(D_y, D_y)`` of the batch-mean loss. :func:`output_quadratic` runs the module's own loss once
(the parameterisation, weighting and time law are the configured ones, nothing is re-derived)
with a forward hook that records the denoiser's inputs and substitutes its output by a float64
leaf, then reads ``g`` by one backward pass and ``H`` by ``D_y`` more (double backward).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["OutputQuadratic", "output_quadratic"]


@dataclass(frozen=True)
class OutputQuadratic:
    """The loss on one pool as a quadratic in the outputs (float64).

    Attributes:
        feats: per-mode features ``(B, m_k)`` of the pool's inputs.
        outputs: current outputs ``y_b`` ``(B, D_y)``.
        value: batch-mean loss at ``outputs`` (0-d).
        grad: ``d loss / d y`` ``(B, D_y)`` at ``outputs``.
        hessian: ``(B, D_y, D_y)`` or ``None`` when not asked for.
        per_sample: the loss's per-sample values ``(B,)`` at ``outputs`` (for logging).
        t: the times drawn ``(B,)``.
        logs: the loss's extra logs.
    """

    feats: list[Tensor]
    outputs: Tensor
    value: Tensor
    grad: Tensor
    hessian: Tensor | None
    per_sample: Tensor
    t: Tensor
    logs: dict[str, Tensor]

    def linear_term(self) -> Tensor:
        """``g0 = grad - H y``: the gradient at ``y = 0`` ``(B, D_y)`` (needs the Hessian)."""
        assert self.hessian is not None
        return self.grad - torch.einsum("byz,bz->by", self.hessian, self.outputs)

    def value_at(self, outputs: Tensor) -> Tensor:
        """The batch-mean loss at other outputs ``(B, D_y)`` (exact for a quadratic loss)."""
        d = outputs - self.outputs
        quad = 0.0
        if self.hessian is not None:
            quad = 0.5 * torch.einsum("by,byz,bz->", d, self.hessian, d)
        return self.value + (self.grad * d).sum() + quad


def output_quadratic(
    net,
    model,
    loss,
    sde,
    x0: Tensor,
    cond: Tensor | None,
    generator: torch.Generator | None,
    *,
    hessian: bool,
) -> OutputQuadratic:
    """Run ``loss(model, sde, x0, cond)`` once and return it as :class:`OutputQuadratic`.

    ``loss`` is a :class:`diffkit.losses.base.Loss` (called as the module calls it; not imported
    here: losses and denoisers are peers).

    ``net``: the :class:`~diffkit.denoisers.tensor_train.TensorTrain` inside ``model`` (a
    ``Parameterization``); its outputs are recomputed in float64 from float64 features.
    """
    captured: dict[str, object] = {}

    def hook(module, args, output):
        u, c_noise = args[0], args[1]
        c = args[2] if len(args) > 2 else None
        feats = net.features(u, c_noise, c, dtype=torch.float64)
        with torch.no_grad():
            y = net.contract([f for f in feats]).to(torch.float64)
        y = y.detach().requires_grad_(True)
        captured["feats"], captured["y"] = feats, y
        return y.reshape(output.shape)

    handle = net.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            out = loss(model, sde, x0, cond, generator=generator)
            y = captured["y"]
            value = out.loss.to(torch.float64).mean()
            (grad,) = torch.autograd.grad(value, y, create_graph=hessian)
            h = None
            if hessian:
                rows = [
                    torch.autograd.grad(grad[:, j].sum(), y, retain_graph=True)[0]
                    for j in range(y.shape[1])
                ]
                h = torch.stack(rows, dim=1).detach()  # h[b, j, :] = d grad_bj / d y_b
    finally:
        handle.remove()
    feats = [f.detach() for f in captured["feats"]]  # type: ignore[union-attr]
    return OutputQuadratic(
        feats=feats,
        outputs=y.detach(),
        value=value.detach(),
        grad=grad.detach(),
        hessian=h,
        per_sample=out.loss.detach(),
        t=out.t,
        logs=out.logs,
    )
