"""The diffkit CLI without training: short names, --print_config round trip, user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from diffkit.cli.lightning_cli import DiffkitCLI
from diffkit.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
TOY = str(ROOT / "configs" / "toy" / "gmm_vp_resnet.yaml")
NO_LOG = "--trainer.logger=false"


def test_short_names_in_yaml_and_on_the_command_line() -> None:
    from diffkit.denoisers.resnet import ResNetMLP
    from diffkit.losses.dsm import DenoisingScoreMatching
    from diffkit.samplers.ddim import DDIM
    from diffkit.sdes.vp import VPSDE

    args = ["-c", TOY, NO_LOG, "--model.sde=vp", "--model.sde.beta_max=12"]
    args += ["--model.sampler=ddim", "--model.sampler.steps=10"]
    cli = DiffkitCLI(args=args, run=False)
    m = cli.model
    assert type(m.sde) is VPSDE and m.sde.beta_max == 12
    assert type(m.sampler) is DDIM and m.sampler.steps == 10
    assert type(m.loss) is DenoisingScoreMatching and type(m.net) is ResNetMLP
    assert m.net.spec.data_shape == (2,) and m.data_shape == (2,)  # linked from the datamodule
    assert type(cli.datamodule).__name__ == "GaussianMixtureDataModule"
    callbacks = {type(c).__name__ for c in cli.trainer.callbacks}
    assert {"ScatterPlot", "ModelCheckpoint", "RunSummary"} <= callbacks


def test_linked_data_shape_follows_the_datamodule() -> None:
    args = ["-c", TOY, NO_LOG, "--data.init_args.preset=random", "--data.init_args.dim=5"]
    args += ["--data.init_args.labels=true"]
    m = DiffkitCLI(args=args, run=False).model
    assert m.data_shape == (5,) and m.spec.num_classes == 8


def test_print_config_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fit", "-c", TOY, "--model.sampler=ddim", "--print_config"]) == 0
    first = capsys.readouterr().out
    assert "class_path: diffkit.aliases.samplers.ddim" in first
    saved = tmp_path / "printed.yaml"
    saved.write_text(first)
    assert main(["fit", "-c", str(saved), "--print_config"]) == 0
    assert capsys.readouterr().out == first


def _fails(args: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    return err


def test_unknown_short_name_suggests_the_close_one(capsys: pytest.CaptureFixture) -> None:
    err = _fails(["fit", "-c", TOY, "--model.sde=vpp"], capsys)
    assert "Unknown sde 'vpp'" in err and "Did you mean 'vp'" in err


def test_wrong_init_arg_names_part_and_argument(capsys: pytest.CaptureFixture) -> None:
    err = _fails(["fit", "-c", TOY, "--model.denoiser.widht=3"], capsys)
    assert "widht" in err and "denoiser" in err


def test_bad_yaml_is_reported_with_its_position(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  sde: vp\n   denoiser: [\n")
    err = _fails(["fit", "-c", str(bad)], capsys)
    assert f"config file '{bad}', line 3" in err


def test_part_rejecting_its_arguments_names_the_field(capsys: pytest.CaptureFixture) -> None:
    err = _fails(["fit", "-c", TOY, "--data.init_args.dim=3"], capsys)
    assert "preset 'diamond' has dim=2, got dim=3" in err


def test_unknown_command_and_usage(capsys: pytest.CaptureFixture) -> None:
    assert main(["fitt"]) == 2
    assert "Did you mean 'fit'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("fit", "list", "sample", "evaluate"))


def test_python_dash_m_and_routing_to_list(capsys: pytest.CaptureFixture) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "diffkit", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0 and "diffkit fit -c configs/toy/gmm_vp_resnet.yaml" in proc.stdout
    assert main(["list", "sde"]) == 0
    assert "vp" in capsys.readouterr().out
