"""Classifier-free guidance from ``diffkit sample`` (``--guidance_scale``, ``--class_label``) and
from the ``sample_grid`` callback, on a tiny class-conditional fit trained with label dropout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_fit_yaml, fit_tiny_run) -> Path:
    config = tiny_fit_yaml(
        model="  label_dropout: 0.2\n",
        data="  class_path: gmm\n  init_args:\n    {preset: ring, labels: true, num_train: 256, "
        "num_val: 64, num_test: 64, batch_size: 128}\n",
    )
    return fit_tiny_run(tmp_path_factory.mktemp("cond"), config)


def test_sample_with_guidance_and_a_class(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from diffkit.cli.sample_cmd import load_module, sample_main

    out = tmp_path / "g"
    base = [str(checkpoint), "--num_samples", "12", "--metrics", "[]", "--output", str(out)]
    assert sample_main([*base, "--guidance_scale", "3", "--class_label", "2"]) == 0
    saved = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert saved["nfe"] == 6 and saved["guidance_scale"] == 3.0 and saved["class_label"] == 2
    assert "NFE 6" in capsys.readouterr().out
    # the same draw through the module: labels all 2, guided, thresholding off (vector data)
    module = load_module(checkpoint)
    assert module.label_dropout == 0.2 and module.thresholding == "none"
    want = module.sample(
        12,
        generator=torch.Generator().manual_seed(0),
        cond=torch.full((12,), 2),
        guidance_scale=3.0,
    )
    torch.testing.assert_close(saved["x"], want.x)
    assert sample_main([*base, "--class_label", "2"]) == 0
    assert torch.load(out.with_suffix(".pt"), weights_only=True)["nfe"] == 3


def test_sample_rejects_a_class_the_model_lacks(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from diffkit.cli.sample_cmd import sample_main

    argv = [
        str(checkpoint),
        "--num_samples",
        "4",
        "--metrics",
        "[]",
        "--output",
        str(tmp_path / "x"),
    ]
    assert sample_main([*argv, "--class_label", "8"]) == 2
    err = capsys.readouterr().err
    assert "--class_label 8" in err and "0 .. 7" in err and "Traceback" not in err


def test_sample_grid_callback_guides(checkpoint: Path) -> None:
    from diffkit.callbacks.sample_grid import SampleGrid
    from diffkit.cli.sample_cmd import load_module

    module = load_module(checkpoint)
    x, nfe, _ = SampleGrid(num_samples=8, guidance_scale=2.0).sample(module)
    assert x.shape == (8, 2) and nfe == 6
    assert SampleGrid(num_samples=8).sample(module)[1] == 3
