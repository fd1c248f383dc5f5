"""Parameterization.on_grid: precomputed per-grid conditioning equals the per-call path.

The samplers' fast path evaluates a score model at ``times[i]`` with the kernel, ``c_in``,
``c_noise``, the Gaussian residual and EDM's coefficients computed once per grid (as Python
floats for scalar kernels). Every option on every SDE must give the prediction of
``model(u, times[i])`` (the slow reference), up to float32 rounding.
"""

from __future__ import annotations

import copy
import gc
import pickle

import pytest
import torch
from torch import Tensor

from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.denoisers.parameterization import Parameterization
from diffkit.prediction import on_grid
from diffkit.sdes.blur import BlurSDE
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.ve import VESDE
from diffkit.sdes.vp import VPSDE


class Pointwise(Denoiser):
    """A non-linear network on any state shape that records its inputs; with ``velocity_only``
    it returns the velocity half ``(B, *S)`` of a ``(B, 2, *S)`` state; ``cond`` shifts it."""

    def __init__(self, spec: DenoiserSpec, velocity_only: bool = False) -> None:
        super().__init__(spec)
        self.a = torch.nn.Parameter(torch.tensor(0.7))
        self.b = torch.nn.Parameter(torch.tensor(-0.3))
        self.velocity_only = velocity_only
        self.seen: dict[str, Tensor] = {}

    def forward(self, u: Tensor, c_noise: Tensor, cond: Tensor | None = None) -> Tensor:
        self.seen = {"u": u, "c": c_noise}
        x = u[:, 1] if self.velocity_only else u
        c = c_noise.reshape(-1, *[1] * (x.dim() - 1))
        out = self.a * x + self.b * torch.sin(3 * x) + 0.1 * torch.tanh(c)
        if cond is not None:
            out = out + 0.05 * cond.to(out.dtype).reshape(-1, *[1] * (x.dim() - 1))
        return out


def _sde(name: str):
    return {
        "vp": lambda: VPSDE(),
        "vp_cosine": lambda: VPSDE(schedule="cosine"),
        "ve": lambda: VESDE(),
        "cld": lambda: CLDSDE(),
        "blur": lambda: BlurSDE(image_size=(4, 4)),
    }[name]()


DATA_SHAPES = {"vp": (3,), "vp_cosine": (3,), "ve": (3,), "cld": (3,), "blur": (2, 4, 4)}

CASES = [
    ("vp", {"target": "eps"}),
    ("vp", {"target": "x0"}),
    ("vp", {"target": "v"}),
    ("vp", {"target": "score"}),
    ("vp", {"target": "eps", "input_scaling": False}),
    ("vp", {"target": "eps", "residual": "gaussian"}),
    ("vp", {"target": "x0", "residual": "gaussian"}),
    ("vp", {"target": "score", "residual": "gaussian"}),
    ("vp", {"target": "v", "residual": "gaussian"}),
    ("vp", {"target": "x0", "preconditioning": "edm"}),
    ("vp_cosine", {"target": "eps", "residual": "gaussian"}),
    ("ve", {"target": "eps"}),
    ("ve", {"target": "x0", "residual": "gaussian"}),
    ("ve", {"target": "x0", "preconditioning": "edm"}),
    ("cld", {"target": "eps"}),
    ("cld", {"target": "x0"}),
    ("cld", {"target": "eps", "residual": "gaussian"}),
    ("cld", {"target": "x0", "residual": "gaussian"}),
    ("cld", {"target": "eps", "velocity_only": True}),
    ("cld", {"target": "score", "velocity_only": True, "mixed_score": True}),
    ("cld", {"target": "eps", "velocity_only": True, "residual": "gaussian"}),
    ("blur", {"target": "eps"}),
    ("blur", {"target": "x0", "residual": "gaussian"}),
    ("blur", {"target": "score", "input_scaling": False}),
]


def _model(sde_name: str, kwargs: dict) -> tuple[Parameterization, tuple[int, ...]]:
    sde = _sde(sde_name)
    data = DATA_SHAPES[sde_name]
    state = sde.state_shape(data)
    spec = DenoiserSpec(data, state, data if kwargs.get("velocity_only") else state)
    net = Pointwise(spec, velocity_only=kwargs.get("velocity_only", False))
    return Parameterization(sde, net, **kwargs), state


def _grid(sde) -> Tensor:
    return torch.linspace(sde.T, 1e-3, 7, dtype=torch.float64)


@pytest.mark.parametrize(("sde_name", "kwargs"), CASES, ids=lambda v: str(v))
def test_grid_prediction_equals_per_call_prediction(sde_name: str, kwargs: dict) -> None:
    model, state = _model(sde_name, kwargs)
    times = _grid(model.sde)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn((5, *state), generator=gen)
    grid = on_grid(model, times)
    conversions = ["score"] if kwargs.get("velocity_only") else ["eps", "x0", "score"]
    for i in range(len(times)):
        slow = model(u, times[i])
        fast = grid(u, i)
        assert fast.target == slow.target and fast.velocity_only == slow.velocity_only
        assert fast.t.shape == slow.t.shape == (5,)
        torch.testing.assert_close(fast.t, slow.t, rtol=0, atol=0)
        for name in ("mean_op", "cov", "scale"):
            torch.testing.assert_close(
                getattr(fast.kernel, name).coef[0], getattr(slow.kernel, name).coef[0]
            )
        torch.testing.assert_close(fast.raw, slow.raw, rtol=2e-5, atol=2e-5)
        for conv in conversions:
            a, b = getattr(fast, conv)(), getattr(slow, conv)()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * (1 + b.abs().max().item()))


def test_scalar_grid_rows_are_python_floats_and_feed_the_same_network_input() -> None:
    model, state = _model("vp", {"target": "eps", "residual": "gaussian"})
    times = _grid(model.sde)
    rows = model.grid_conditioning(times, torch.device("cpu"), torch.float32)
    assert len(rows) == len(times)
    assert all(isinstance(r.c_in, float) and isinstance(r.residual, float) for r in rows)
    assert all(r.c_noise.dtype == torch.float32 and r.c_noise.dim() == 0 for r in rows)
    u = torch.randn(4, *state)
    on_grid(model, times)(u, 3)
    fast_in = model.net.seen["u"]
    model(u, times[3])
    torch.testing.assert_close(fast_in, model.net.seen["u"], rtol=0, atol=0)


def test_grid_tables_are_cached_per_grid_device_and_dtype_and_dropped_with_the_grid() -> None:
    model, _ = _model("cld", {"target": "eps"})
    cpu = torch.device("cpu")
    times = _grid(model.sde)
    rows = model.grid_conditioning(times, cpu, torch.float32)
    assert model.grid_conditioning(times, cpu, torch.float32) is rows
    rows64 = model.grid_conditioning(times, cpu, torch.float64)
    assert rows64 is not rows and rows64[0].c_noise.dtype == torch.float64
    same_values = times.clone()  # another grid object: its own entry, never a stale hit
    assert model.grid_conditioning(same_values, cpu, torch.float32) is not rows
    assert len(model._grid_tables) == 3
    del times, rows, rows64, same_values
    gc.collect()
    other = torch.linspace(0.9, 0.1, 4, dtype=torch.float64)
    model.grid_conditioning(other, cpu, torch.float32)
    assert len(model._grid_tables) == 1  # dead grids' tables are dropped


def test_network_dtype_change_is_followed_and_copies_start_without_tables() -> None:
    model, state = _model("vp", {"target": "eps"})
    times = _grid(model.sde)
    u = torch.randn(3, *state, dtype=torch.float64)
    on_grid(model, times)(u, 2)
    assert model.net.seen["u"].dtype == torch.float32
    model.double()
    on_grid(model, times)(u, 2)
    assert model.net.seen["u"].dtype == torch.float64
    assert model.net.seen["c"].dtype == torch.float64
    assert model._grid_tables
    assert copy.deepcopy(model)._grid_tables == {}
    clone = pickle.loads(pickle.dumps(model))
    assert clone._grid_tables == {}
    torch.testing.assert_close(on_grid(clone, times)(u, 2).raw, on_grid(model, times)(u, 2).raw)


def test_conditioned_model_passes_labels_on_both_paths() -> None:
    model, state = _model("vp", {"target": "eps"})
    times = _grid(model.sde)
    u = torch.randn(4, *state)
    cond = torch.tensor([0, 1, 2, 3])
    bound = model.conditioned(cond)
    fast, slow = on_grid(bound, times)(u, 1), bound(u, times[1])
    torch.testing.assert_close(fast.raw, slow.raw)
    torch.testing.assert_close(slow.raw, model(u, times[1], cond=cond).raw)
    assert not torch.allclose(fast.raw, model(u, times[1]).raw)  # the labels change the output


def test_plain_callables_are_evaluated_at_the_grid_time() -> None:
    model, state = _model("ve", {"target": "eps"})
    times = _grid(model.sde)
    seen: list[Tensor] = []

    def plain(u: Tensor, t: Tensor):
        seen.append(t)
        return model(u, t)

    u = torch.randn(6, *state)
    pred = on_grid(plain, times)(u, 4)
    assert seen[0].shape == (6,) and bool((seen[0] == times[4]).all())
    torch.testing.assert_close(pred.raw, on_grid(model, times)(u, 4).raw)


def test_grid_path_goes_through_module_call_and_follows_dtype_changes() -> None:
    """Forward hooks fire on the grid path (it calls the module), and a network dtype change
    between two calls of the same grid model is picked up."""
    model, state = _model("vp", {"target": "eps", "residual": "gaussian"})
    times = _grid(model.sde)
    calls: list[int] = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    grid = on_grid(model, times)
    u = torch.randn(3, *state, dtype=torch.float64)
    grid(u, 0)
    model.net.double()
    grid(u, 1)
    handle.remove()
    assert len(calls) == 2
    assert model.net.seen["u"].dtype == torch.float64 and model.net.seen["c"].dtype == torch.float64


@pytest.mark.parametrize("sde_name", ["vp", "blur", "cld"])
def test_half_precision_network_input_is_rounded_once(sde_name: str) -> None:
    """c_in is applied in the state's dtype and the product rounded once to bfloat16: the
    network input is within one bfloat16 rounding of the float64 value, on both paths."""
    model, state = _model(sde_name, {"target": "eps"})
    model.net.to(torch.bfloat16)
    times = _grid(model.sde)
    u = torch.randn(16, *state, generator=torch.Generator().manual_seed(0))
    c64 = model.conditioning(times[2:3].expand(16), torch.float64, len(state))
    exact = c64.c_in.apply(u.double()) if hasattr(c64.c_in, "apply") else u.double() * c64.c_in
    for run in (lambda: model(u, times[2]), lambda: on_grid(model, times)(u, 2)):
        run()
        seen = model.net.seen["u"]
        assert seen.dtype == torch.bfloat16
        rel = ((seen.double() - exact).abs() / exact.abs().clamp_min(1e-3)).max().item()
        assert rel <= 2.0**-8, rel  # bfloat16 rounds to 2^-9 relative; one rounding + float32
