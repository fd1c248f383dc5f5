"""The shipped digits / CIFAR-10 / trainer configs: they print with --print_config, and the
CIFAR-10 ones train a fast_dev_run step on generated 32x32 PNGs swapped in for CIFAR-10."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
CIFAR = ["vp_unet", "cld_unet", "blur_unet"]


def _cli(args):
    from diffkit.cli.lightning_cli import DiffkitCLI

    return DiffkitCLI(args)


@pytest.mark.parametrize(
    "config",
    [
        "digits/vp_unet.yaml",
        "digits/v_unet.yaml",
        "shapes/cfg_unet.yaml",
        *(f"cifar10/{c}.yaml" for c in CIFAR),
    ],
)
def test_config_prints_resolved(config, capsys):
    with pytest.raises(SystemExit) as info:
        _cli(["fit", "-c", str(CONFIGS / config), "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    model = printed["model"]
    assert model["denoiser"]["class_path"].startswith("diffkit.aliases.denoisers.")
    assert printed["data"]["class_path"].startswith("diffkit.aliases.datamodules.")
    callbacks = [c["class_path"].rsplit(".", 1)[-1] for c in printed["trainer"]["callbacks"]]
    assert {"ema", "sample_grid"} <= set(callbacks)


@pytest.mark.parametrize("trainer", ["ddp", "slurm"])
def test_trainer_configs_compose(trainer, capsys):
    with pytest.raises(SystemExit):
        _cli(
            [
                "fit",
                "-c",
                str(CONFIGS / "cifar10/vp_unet.yaml"),
                "-c",
                str(CONFIGS / f"trainer/{trainer}.yaml"),
                "--print_config",
            ]
        )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["strategy"] == "ddp"
    assert printed["model"]["sde"]["class_path"].endswith(".vp")


@pytest.fixture(scope="module")
def png_folder(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("pngs")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", CIFAR)
def test_cifar10_config_fast_dev_run_on_image_folder(name, png_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's W&B logger writes under ./runs
    cli = _cli(
        [
            "fit",
            "-c",
            str(CONFIGS / f"cifar10/{name}.yaml"),
            "--trainer.fast_dev_run=true",
            "--trainer.accelerator=cpu",
            "--trainer.devices=1",
            "--data=image_folder",
            f"--data.root={png_folder}",
            "--data.image_size=32",
            "--data.batch_size=2",
            "--data.num_val=2",
            "--data.num_test=2",
            "--data.num_workers=0",
            f"--trainer.default_root_dir={tmp_path}",
        ]
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.model.data_shape == (3, 32, 32)
    assert np.isfinite(float(cli.trainer.callback_metrics["train/loss"]))
