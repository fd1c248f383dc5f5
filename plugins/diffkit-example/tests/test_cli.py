"""The plugin's parts by short name from its shipped config, through diffkit's real CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffkit.cli.lightning_cli import DiffkitCLI

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "subvp_gmm.yaml"


@pytest.mark.slow
def test_fit_fast_dev_run_with_plugin_parts_by_short_name(tmp_path: Path) -> None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("diffkit-example")
    except PackageNotFoundError:
        pytest.skip("diffkit-example is not installed (pip install -e plugins/diffkit-example)")
    cli = DiffkitCLI(
        args=[
            "fit",
            "-c",
            str(CONFIG),
            "--trainer.fast_dev_run=true",
            "--trainer.logger=false",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.callbacks=[]",  # the scatter plot is exercised by core tests
        ],
    )
    from diffkit_example.samplers import AncestralSampler
    from diffkit_example.sdes import SubVPSDE

    assert isinstance(cli.model.sde, SubVPSDE)
    assert isinstance(cli.model.sampler, AncestralSampler)
    assert cli.trainer.state.finished
