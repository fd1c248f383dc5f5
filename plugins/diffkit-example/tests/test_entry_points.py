"""The installed distribution's entry points resolve through diffkit's registries."""

from __future__ import annotations

import importlib.metadata

import pytest

from diffkit.registry import SAMPLERS, SDES

try:
    DIST = importlib.metadata.distribution("diffkit-example")
except importlib.metadata.PackageNotFoundError:  # running from a source tree only
    DIST = None

pytestmark = pytest.mark.skipif(DIST is None, reason="diffkit-example is not installed")


def test_entry_points_resolve() -> None:
    from diffkit_example.samplers import AncestralSampler
    from diffkit_example.sdes import SubVPSDE

    assert SDES.get("subvp") is SubVPSDE
    assert SAMPLERS.get("ancestral") is AncestralSampler
    source = f"diffkit-example=={DIST.version}"
    listed = {(e.kind, e.name): e for e in [*SDES.entries(), *SAMPLERS.entries()]}
    assert listed["sde", "subvp"].source == source and listed["sde", "subvp"].status == "ok"
    assert listed["sampler", "ancestral"].source == source


def test_short_names_in_a_parser() -> None:
    from jsonargparse import ArgumentParser

    from diffkit.registry import materialize_all
    from diffkit.samplers.base import Sampler
    from diffkit.sdes.base import LinearSDE
    from diffkit_example.samplers import AncestralSampler
    from diffkit_example.sdes import SubVPSDE

    materialize_all(["sde", "sampler"])
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--sde", type=LinearSDE)
    parser.add_argument("--sampler", type=Sampler)
    cfg = parser.parse_args(["--sde=subvp", "--sde.beta_max=10", "--sampler=ancestral"])
    init = parser.instantiate(cfg)
    assert type(init.sde) is SubVPSDE and init.sde.beta_max == 10.0
    assert type(init.sampler) is AncestralSampler
