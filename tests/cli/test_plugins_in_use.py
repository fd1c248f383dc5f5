"""The plugins recorded in saved configs are the distributions whose classes a run uses."""

from __future__ import annotations

import functools

import pytest

from diffkit.cli.lightning_cli import installed_plugins, plugins_in_use
from diffkit.denoisers.resnet import ResNetMLP
from diffkit.module import DiffusionModule
from diffkit.sdes.vp import VPSDE

TINY = functools.partial(ResNetMLP, width=8, depth=1, emb_dim=8)


def test_a_run_of_built_ins_uses_no_plugin() -> None:
    assert plugins_in_use([DiffusionModule(VPSDE(), TINY)]) == {}


def test_a_plugin_sde_is_recorded_with_its_version() -> None:
    sdes = pytest.importorskip("diffkit_example.sdes")
    if "diffkit-example" not in installed_plugins():
        pytest.skip("diffkit-example is importable but not installed as a distribution")
    version = installed_plugins()["diffkit-example"][0]
    module = DiffusionModule(sdes.SubVPSDE(), TINY)
    assert plugins_in_use([module]) == {"diffkit-example": version}
