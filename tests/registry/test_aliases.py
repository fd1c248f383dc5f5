"""Short names through jsonargparse itself: alias classes, callables, YAML, pickling."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch
from jsonargparse import ArgumentParser

import diffkit.aliases.denoisers as denoiser_aliases
import diffkit.aliases.samplers as sampler_aliases
import diffkit.aliases.sdes as sde_aliases
from diffkit.denoisers.base import Denoiser, DenoiserSpec
from diffkit.registry import DENOISERS, SAMPLERS, SDES, materialize_all
from diffkit.samplers.base import Sampler
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.vp import VPSDE

SPEC = DenoiserSpec(data_shape=(2,), state_shape=(2,), output_shape=(2,))


class TinyDenoiser(Denoiser):
    """A linear test denoiser."""

    def __init__(self, spec: DenoiserSpec, /, width: int = 4) -> None:
        super().__init__(spec)
        self.width = width
        self.lin = torch.nn.Linear(spec.data_shape[0], spec.output_shape[0])

    def forward(self, u, c_noise, cond=None):
        return self.lin(u)


def tiny_wide(spec: DenoiserSpec, /, width: int = 16) -> TinyDenoiser:
    """A factory preset."""
    return TinyDenoiser(spec, width=width)


class TinySampler(Sampler):
    """Returns its input (a test sampler)."""

    def run(self, model, sde, u, plan, *, generator, on_step):
        return u


@pytest.fixture
def scoped_parts():
    with SDES.scoped(), DENOISERS.scoped(), SAMPLERS.scoped():
        DENOISERS.register("tiny_den")(TinyDenoiser)
        DENOISERS.register("tiny_wide")(tiny_wide)
        SAMPLERS.register("tiny_sampler")(TinySampler)
        yield


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--config", action="config")
    parser.add_argument("--sde", type=LinearSDE, required=True)
    parser.add_argument("--denoiser", type=Callable[[DenoiserSpec], Denoiser] | None, default=None)
    parser.add_argument("--sampler", type=Sampler | None, default=None)
    return parser


def test_bare_short_names_after_materialising(scoped_parts) -> None:
    failures = materialize_all(["sde", "denoiser", "sampler"])
    assert not [f for f in failures if f.name in ("vp", "tiny_den", "tiny_wide", "tiny_sampler")]
    parser = _parser()
    cfg = parser.parse_args(
        [
            *("--sde=vp", "--sde.beta_max=10", "--denoiser=tiny_den", "--denoiser.width=3"),
            *("--sampler=tiny_sampler", "--sampler.steps=4"),
        ]
    )
    assert cfg.sde.class_path == "diffkit.aliases.sdes.vp"
    assert cfg.denoiser.class_path == "diffkit.aliases.denoisers.tiny_den"
    init = parser.instantiate(cfg)
    assert type(init.sde) is VPSDE and init.sde.beta_max == 10.0
    net = init.denoiser(SPEC)  # the callable gets the spec later, like OptimizerCallable
    assert type(net) is TinyDenoiser and net.width == 3 and net.spec == SPEC
    assert type(init.sampler) is TinySampler and init.sampler.steps == 4
    # instances are of the real classes: pickling and isinstance are unaffected
    sde = pickle.loads(pickle.dumps(init.sde))
    assert type(sde) is VPSDE and sde.beta_max == 10.0
    assert isinstance(init.sampler, Sampler)
    assert pickle.loads(pickle.dumps(sde_aliases.vp)) is sde_aliases.vp


def test_factory_short_name_for_callable_parameter(scoped_parts) -> None:
    materialize_all(["denoiser"])
    parser = _parser()
    init = parser.instantiate(parser.parse_args(["--sde=vp", "--denoiser=tiny_wide"]))
    net = init.denoiser(SPEC)
    assert type(net) is TinyDenoiser and net.width == 16
    assert issubclass(denoiser_aliases.tiny_wide, TinyDenoiser)


def test_yaml_class_path_short_name_round_trip(scoped_parts, tmp_path) -> None:
    materialize_all(["sde", "sampler"])
    config = tmp_path / "cfg.yaml"
    config.write_text(
        "sde: {class_path: vp, init_args: {beta_min: 0.2}}\n"
        "sampler: {class_path: tiny_sampler, init_args: {steps: 7, grid: uniform}}\n"
    )
    parser = _parser()
    cfg = parser.parse_args([f"--config={config}"])
    dumped = parser.dump(cfg)
    assert "class_path: diffkit.aliases.samplers.tiny_sampler" in dumped
    assert "class_path: diffkit.aliases.sdes.vp" in dumped
    again = tmp_path / "again.yaml"
    again.write_text(dumped)
    init = parser.instantiate(parser.parse_args([f"--config={again}"]))
    assert init.sampler.steps == 7 and init.sampler.grid == "uniform"
    assert init.sde.beta_min == 0.2


def test_alias_path_resolves_without_materialising(scoped_parts) -> None:
    # Forget any alias made earlier in this process: the full alias path must still resolve
    # (through the kind module's __getattr__), as in a fresh process loading a saved config.
    SAMPLERS._drop_alias("tiny_sampler")
    assert "tiny_sampler" not in vars(sampler_aliases)
    parser = _parser()
    cfg = parser.parse_args(
        ["--sde=diffkit.sdes.vp.VPSDE", "--sampler=diffkit.aliases.samplers.tiny_sampler"]
    )
    assert type(parser.instantiate(cfg).sampler) is TinySampler


def test_scope_exit_removes_aliases() -> None:
    with SAMPLERS.scoped():
        SAMPLERS.register("tiny_scoped")(TinySampler)
        assert issubclass(sampler_aliases.tiny_scoped, TinySampler)
    assert "tiny_scoped" not in vars(sampler_aliases)
    with pytest.raises(AttributeError, match="Unknown sampler 'tiny_scoped'"):
        sampler_aliases.tiny_scoped


def test_override_replaces_alias() -> None:
    with SAMPLERS.scoped():
        SAMPLERS.register("tiny_over")(TinySampler)
        first = SAMPLERS.alias("tiny_over")

        class Other(TinySampler):
            pass

        SAMPLERS.register("tiny_over", override=True)(Other)
        second = SAMPLERS.alias("tiny_over")
        assert second is not first and issubclass(second, Other)
        assert sampler_aliases.tiny_over is second


@pytest.mark.slow
def test_saved_alias_path_in_fresh_process() -> None:
    code = """
import pickle, sys
from jsonargparse import ArgumentParser
from diffkit.sdes.base import LinearSDE
p = ArgumentParser(exit_on_error=False)
p.add_argument("--sde", type=LinearSDE)
cfg = p.parse_args(["--sde=diffkit.aliases.sdes.vp", "--sde.beta_max=7"])
sde = p.instantiate(cfg).sde
assert type(sde).__name__ == "VPSDE" and sde.beta_max == 7.0, sde
assert type(pickle.loads(pickle.dumps(sde))).__name__ == "VPSDE"
assert not any(m.startswith("diffkit_example") for m in sys.modules), "plugin imported"
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_short_names_nested_inside_an_aliased_part_resolve() -> None:
    """A short name inside a short-named part (``sample_grid`` -> ``sampler: ddim``) resolves
    against the nested parameter's base type, although the part's module postpones annotations."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.callbacks import Callback

    from diffkit.registry import materialize_all
    from diffkit.samplers.ddim import DDIM

    materialize_all()
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--cb", type=Callback)
    value = '{"class_path": "sample_grid", "init_args": {"sampler": {"class_path": "ddim", "init_args": {"steps": 7}}}}'  # noqa: E501
    cb = parser.instantiate(parser.parse_args(["--cb", value])).cb
    assert type(cb).__name__ == "SampleGrid"
    assert isinstance(cb.sampler, DDIM) and cb.sampler.steps == 7
