"""ALS and Riemannian SGD for the functional tensor train: a core update against a direct solve
of the same least-squares problem, monotone sweeps, tangent steps that keep the ranks and lower
the loss on a fixed pool."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from diffkit.denoisers.tensor_train import TensorTrain
from diffkit.denoisers.tt_als import als_sweep, solve_core
from diffkit.denoisers.tt_manifold import (
    _qr_left,
    evaluate_tt,
    left_interfaces,
    left_orthogonalize,
    right_interfaces,
    right_orthogonalize,
    tt_ranks,
)
from diffkit.denoisers.tt_pool import output_quadratic
from diffkit.losses.dsm import DenoisingScoreMatching
from diffkit.module import DiffusionModule
from diffkit.sdes.vp import VPSDE

F64 = torch.float64


def tt_module(optimizer: str, dim: int = 2, loss=None, **kwargs) -> DiffusionModule:
    torch.manual_seed(0)
    factory = functools.partial(
        TensorTrain,
        rank=3,
        num_basis=4,
        time_basis=3,
        basis=kwargs.pop("basis", "bspline"),
        optimizer=optimizer,
        init_std=0.3,
        **kwargs,
    )
    return DiffusionModule(
        VPSDE(), factory, loss=loss or DenoisingScoreMatching(), data_shape=(dim,), seed=0
    )


def pool_of(module: DiffusionModule, n: int = 200, seed: int = 0):
    x0 = torch.randn(n, module.data_shape[0], generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    return x0, output_quadratic(
        module.net, module.model, module.loss, module.sde, x0, None, gen, hessian=True
    )


def sq_norm(cores) -> torch.Tensor:
    """``||A||_F^2`` independently of the gauge (left-orthogonal form: the last core's norm)."""
    return left_orthogonalize(cores)[-1].pow(2).sum()


def objective(pool, cores, ridge: float) -> torch.Tensor:
    return pool.value_at(evaluate_tt(cores, pool.feats)) + 0.5 * ridge * sq_norm(cores)


@pytest.mark.parametrize(
    ("k", "loss"),
    [
        (0, DenoisingScoreMatching()),
        (1, DenoisingScoreMatching(residual="gaussian", weighting="likelihood")),
        (2, DenoisingScoreMatching(target="x0", reduction="sum")),  # last core, per-output path
    ],
)
def test_als_core_update_equals_a_direct_least_squares_solve(k, loss) -> None:
    """The update of core ``k`` is the exact minimiser of ``loss + ridge/2 ||A||^2`` over it:
    the same loss evaluated through the module (same draws), its gradient and Hessian in the core
    by autograd, and one Newton step (exact for a quadratic) agree to 1e-8."""
    module = tt_module("als", loss=loss)
    net, ridge = module.net, 1e-3
    x0, pool = pool_of(module)
    cur = right_orthogonalize([c.detach() for c in net.cores])
    for j in range(k):  # orthogonality centre at k: left-orthogonal before it
        cur[j], r = _qr_left(cur[j])
        cur[j + 1] = torch.tensordot(r, cur[j + 1], dims=1)
    feats, g0, h = pool.feats, pool.linear_term(), pool.hessian
    lefts, rights = left_interfaces(cur, feats), right_interfaces(cur, feats)
    diagonal = k == len(cur) - 1
    got = solve_core(k, cur, lefts[k], feats[k], rights[k], g0, h, ridge, 0.0, diagonal)

    def direct_objective(theta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for p, c in zip(net.cores, cur, strict=True):
                p.copy_(c)
        params = dict(net.named_parameters())
        params[f"cores.{k}"] = theta
        gen = torch.Generator().manual_seed(1)
        out = module.loss(_Bound(module, params), module.sde, x0, generator=gen)
        return out.loss.mean() + 0.5 * ridge * theta.pow(2).sum()

    theta0 = cur[k].clone().requires_grad_(True)
    grad = torch.autograd.grad(direct_objective(theta0), theta0)[0].reshape(-1)
    hess = torch.autograd.functional.hessian(direct_objective, theta0.detach())
    hess = hess.reshape(grad.numel(), grad.numel())
    want = (theta0.detach().reshape(-1) - torch.linalg.solve(hess, grad)).reshape(cur[k].shape)
    assert (got - want).abs().max() < 1e-8 * max(1.0, want.abs().max().item())
    assert (got - cur[k]).abs().max() > 1e-3  # the solve moved the core


class _Bound:
    """``module.model`` with the denoiser's parameters replaced (functional call)."""

    def __init__(self, module: DiffusionModule, params: dict) -> None:
        self.module, self.params = module, params

    def __call__(self, u_t, t, cond=None):
        return torch.func.functional_call(
            self.module.model, {f"net.{k}": v for k, v in self.params.items()}, (u_t, t)
        )


@pytest.mark.parametrize("proximal", [0.0, 1e-2])
def test_als_sweep_never_increases_the_objective_on_a_fixed_pool(proximal) -> None:
    module = tt_module("als", dim=3, basis="legendre")
    ridge = 1e-4
    _, pool = pool_of(module, n=300)
    cores = [c.detach() for c in module.net.cores]
    values = [objective(pool, cores, ridge).item()]
    for _ in range(3):
        cores = als_sweep(
            cores,
            pool,
            ridge,
            proximal,
            trace=lambda cs: values.append(objective(pool, cs, ridge).item()),
        )
    steps = torch.tensor(values, dtype=F64).diff()
    assert (steps <= 1e-12 * abs(values[0])).all(), values
    assert values[-1] < 0.7 * values[0]
    # the cores keep the denoiser's ranks and the function is what the module evaluates
    assert tt_ranks(cores) == module.net.ranks
    with torch.no_grad():
        for p, c in zip(module.net.cores, cores, strict=True):
            p.copy_(c)
    _, after = pool_of(module, n=300)
    torch.testing.assert_close(after.outputs, evaluate_tt(cores, pool.feats), rtol=0, atol=1e-12)


def test_riemannian_steps_keep_the_ranks_and_lower_the_loss_on_a_fixed_pool() -> None:
    module = tt_module("riemannian", dim=3, riemannian_lr=1.0, riemannian_momentum=0.5)
    net = module.net
    opt = net.make_optimizer()
    values = []
    for _ in range(8):
        _, pool = pool_of(module, n=300)
        values.append(pool.value.item())
        opt.step(lambda pool=pool: pool)
        assert tt_ranks([c.detach() for c in net.cores]) == net.ranks
    _, pool = pool_of(module, n=300)
    values.append(pool.value.item())
    assert values[-1] < 0.8 * values[0], values
    # the retraction is second-order: each step lowers the pool loss (line search on the pool)
    assert all(b < a for a, b in itertools.pairwise(values)), values
    assert "direction" in opt.state[net.cores[0]]


def test_manual_optimizers_refuse_separate_outputs_and_cap_ranks() -> None:
    from diffkit.denoisers.base import DenoiserSpec

    spec = DenoiserSpec(data_shape=(2,), state_shape=(2,), output_shape=(2,), num_classes=None)
    with pytest.raises(ValueError, match="outputs='shared'"):
        TensorTrain(spec, optimizer="als", outputs="separate")
    net = TensorTrain(spec, rank=16, num_basis=4, time_basis=3, optimizer="riemannian")
    assert net.ranks == (1, 3, 8, 2) and net.cores[0].dtype == F64
    assert net.manual_optimization and not TensorTrain(spec).manual_optimization
