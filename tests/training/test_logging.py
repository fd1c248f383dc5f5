"""What a run logs: W&B offline (resolved config with versions and plugins, loss binned by t,
lr, sample grids with NFE and wall time) and the CSV-logger fallback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

OVERLAY = """
trainer:
  max_epochs: 1
  limit_train_batches: 3
  limit_val_batches: 1
  log_every_n_steps: 1
  callbacks:
    - {class_path: ema, init_args: {decay: 0.9}}
    - {class_path: sample_grid, init_args: {every_n_epochs: 1, num_samples: 9, on_train_end: false}}
    - {class_path: lightning.pytorch.callbacks.LearningRateMonitor}
"""


def _fit(tmp_path: Path, *extra: str):
    from diffkit.cli.lightning_cli import DiffkitCLI

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(OVERLAY)
    return DiffkitCLI(
        [
            "fit",
            "-c",
            str(CONFIGS / "digits/vp_unet.yaml"),
            "-c",
            str(overlay),
            "--model.sampler.init_args.steps=4",
            "--model.denoiser.init_args.channels=8",
            f"--trainer.default_root_dir={tmp_path}",
            *extra,
        ]
    )


@pytest.mark.slow
def test_wandb_offline_run_holds_config_metrics_and_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = _fit(tmp_path, f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}")
    run = cli.trainer.logger.experiment
    run_dir = Path(run.dir).parent
    assert run_dir.name.startswith("offline-run-")
    config = dict(run.config)
    assert config["diffkit_version"] and "diffkit_plugins" in config
    assert config["config"]["model"]["sde"]["class_path"] == "diffkit.aliases.sdes.vp"
    assert config["config"]["data"]["class_path"] == "diffkit.aliases.datamodules.digits"
    summary = set(run.summary.keys())
    assert {"train/lr", "sample/nfe", "sample/seconds", "sample/grid", "val/loss"} <= summary
    assert any(k.startswith("train/loss_t[") for k in summary)
    grids = list((run_dir / "files" / "media" / "images").rglob("grid_*.png"))
    assert len(grids) == 1
    assert (run_dir / "samples" / "epoch=0001.png").is_file()
    run.finish()


@pytest.mark.slow
def test_csv_logger_fallback_when_wandb_is_off(tmp_path):
    cli = _fit(
        tmp_path,
        "--trainer.logger=CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'csv'}",
    )
    log_dir = Path(cli.trainer.logger.log_dir)
    with open(log_dir / "metrics.csv") as f:
        columns = set(next(csv.reader(f)))
    assert {"train/lr", "sample/nfe", "sample/seconds", "val/loss"} <= columns
    assert any(c.startswith("train/loss_t[") for c in columns)
    assert (log_dir / "samples" / "epoch=0001.png").is_file()
    assert (log_dir / "config.yaml").is_file()
