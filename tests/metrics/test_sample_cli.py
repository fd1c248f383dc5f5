"""``diffkit sample`` and ``diffkit evaluate`` on a checkpoint of a tiny in-process fit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_fit_yaml, fit_tiny_run) -> Path:
    adam = "  optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}\n"
    config = tiny_fit_yaml(steps=6, model=adam, sizes=(256, 64, 64, 128))
    return fit_tiny_run(tmp_path_factory.mktemp("run"), config)


@pytest.mark.slow
def test_sample_writes_tensor_and_scatter(checkpoint: Path, tmp_path: Path, capsys) -> None:
    from diffkit.cli.sample_cmd import sample_main

    out = tmp_path / "s"
    argv = [str(checkpoint), "--sampler", "ddim", "--sampler.steps", "4", "--num_samples", "30"]
    code = sample_main([*argv, "--batch_size", "16", "--output", str(out)])
    assert code == 0
    saved = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert saved["x"].shape == (30, 2) and saved["nfe"] == 4 and saved["sampler"] == "DDIM"
    assert out.with_suffix(".png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "NFE 4" in printed and "wall time" in printed
    # By default the samples are scored against the run's held-out data (its config.yaml);
    # the printed value is the Sinkhorn metric (tested against POT in test_distances.py) of
    # exactly these samples and that held-out set.
    from diffkit.cli.sample_cmd import find_run_config, held_out

    assert find_run_config(checkpoint) is not None
    line = next(ln for ln in printed.splitlines() if ln.strip().startswith("sinkhorn"))
    ref = held_out(checkpoint, None, 30, 0).double()
    x = saved["x"].double()
    from diffkit.metrics.wasserstein import Sinkhorn

    metric = Sinkhorn()
    metric.update(x, ref)
    assert float(line.split()[1]) == pytest.approx(float(metric.compute()["value"]), rel=1e-5)

    # evaluate the sample file against the run's held-out data (config.yaml of the run)
    from diffkit.cli.sample_cmd import evaluate_main

    report = tmp_path / "eval.json"
    data = ["--data", "toy2d", "--data.dataset", "moons"]
    code = evaluate_main(
        [str(out.with_suffix(".pt")), "--metrics", "[w2, mmd]", "--json", str(report), *data]
    )
    assert code == 0
    res = json.loads(report.read_text())["metrics"]
    assert res["w2"]["n"] == 30 and res["w2"]["value"] > 0 and "bandwidth" in res["mmd"]


@pytest.mark.slow
def test_evaluate_checkpoint_with_saved_config_and_nll(checkpoint: Path, tmp_path: Path) -> None:
    from diffkit.cli.sample_cmd import evaluate_main, find_run_config

    assert find_run_config(checkpoint) is not None
    report = tmp_path / "eval.json"
    argv = [str(checkpoint), "--num_samples", "40", "--num_reference", "20", "--json", str(report)]
    metrics = "[gaussian_w2, {class_path: nll, init_args: {solver: rk4, steps: 3}}]"
    assert evaluate_main([*argv, "--metrics", metrics]) == 0
    out = json.loads(report.read_text())
    assert out["nfe"] == 6 and out["num_samples"] == 40
    assert out["metrics"]["gaussian_w2"]["n"] == 40
    assert out["metrics"]["nll"]["n"] == 20 and out["metrics"]["nll"]["nfe"] == 12


def test_user_errors_exit_2(tmp_path: Path, capsys) -> None:
    from diffkit.cli.sample_cmd import evaluate_main, sample_main

    assert sample_main([str(tmp_path / "missing.ckpt")]) == 2
    assert "no file" in capsys.readouterr().err
    assert evaluate_main([str(tmp_path / "nothing.pt"), "--metrics", "[w2]"]) == 2
    assert "no file" in capsys.readouterr().err


def test_save_picture_grid_scatter_or_nothing(tmp_path: Path) -> None:
    from PIL import Image

    from diffkit.cli.sample_cmd import save_picture

    grey = torch.linspace(-1, 1, 6 * 8 * 8).reshape(6, 1, 8, 8)
    path = save_picture(grey, tmp_path / "grid.png", nrow=3)
    with Image.open(path) as im:  # 3 x 2 tiles of 8 px with 2 px padding
        assert im.size == (3 * 10 + 2, 2 * 10 + 2)
    assert save_picture(torch.randn(50, 2), tmp_path / "scatter.png").stat().st_size > 1000
    assert save_picture(torch.randn(5, 7), tmp_path / "none.png") is None
