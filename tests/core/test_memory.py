"""Memory estimates: exact table bytes, plans scaled linearly in steps, networks sized on the
meta device without allocating or drawing random numbers."""

from __future__ import annotations

import functools

import torch

from diffkit.denoisers.base import DenoiserSpec
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.memory import (
    available_memory,
    format_bytes,
    network_parameters,
    sampler_plan_bytes,
    tensor_bytes,
)
from diffkit.samplers.ddim import DDIM
from diffkit.samplers.euler_maruyama import EulerMaruyama
from diffkit.sdes.cld import CLDSDE
from diffkit.sdes.vp import VPSDE


def test_tensor_bytes_of_a_ddim_plan_is_its_float64_tables() -> None:
    n = 10
    plan = DDIM(steps=n).plan(VPSDE())
    # times (n + 1,), A and B (n, 1, 1), all float64
    assert tensor_bytes(list(vars(plan).values())) == 8 * (n + 1) + 2 * 8 * n


def test_plan_estimate_is_linear_in_steps_and_builds_no_large_plan() -> None:
    for sampler_cls, sde in ((DDIM, VPSDE()), (EulerMaruyama, CLDSDE())):
        small = sampler_cls(steps=1000)
        est = sampler_plan_bytes(small, sde)
        big = sampler_plan_bytes(sampler_cls(steps=10**12), sde)
        assert est is not None and big is not None
        assert abs(big / est - 10**9) < 1e-6 * 10**9
        assert small._plans == {}  # the probe used its own cache
    # scalar VP rows are cheaper per step than CLD's 2x2 operator rows
    assert sampler_plan_bytes(DDIM(steps=1000), VPSDE()) < sampler_plan_bytes(
        DDIM(steps=1000), CLDSDE()
    )


def test_network_parameters_on_meta_match_the_built_network() -> None:
    spec = DenoiserSpec(data_shape=(2,), state_shape=(2,), output_shape=(2,), num_classes=None)
    factory = functools.partial(ResNetMLP, width=32, depth=2, emb_dim=8)
    state = torch.random.get_rng_state()
    name, count = network_parameters(factory, spec)
    assert torch.equal(torch.random.get_rng_state(), state)  # no draw from the global generator
    net = factory(spec)
    assert name == "ResNetMLP"
    assert count == sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    # a network far too large for any machine is sized instantly, without allocating
    assert network_parameters(functools.partial(ResNetMLP, width=10**6, depth=1), spec)[1] > 10**12


def test_available_memory_and_format() -> None:
    have = available_memory()
    assert have is None or have > 0
    assert format_bytes(999) == "999 B"
    assert format_bytes(1.5e9) == "1.5 GB"
    assert format_bytes(2.1e12) == "2.1 TB"
