"""The tensor train's ALS and Riemannian optimisers inside LightningCLI: manual optimisation,
logged loss, and a bit-exact resume (N steps straight == N/2, stop, resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TT_CONFIG = """
seed_everything: 0
model:
  sde: vp
  denoiser:
    class_path: tensor_train
    init_args: {{rank: 3, num_basis: 5, time_basis: 4, optimizer: {optimizer}, als_proximal: 0.01}}
  loss: {{class_path: dsm, init_args: {{residual: gaussian}}}}
  sampler: {{class_path: ddim, init_args: {{steps: 8}}}}
  seed: 0
data:
  class_path: gmm
  init_args: {{preset: random, dim: 3, num_components: 4, std: 0.2, num_train: 1024,
              num_val: 256, batch_size: 256}}
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 4
  log_every_n_steps: 3
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - {{class_path: ema, init_args: {{decay: 0.9, warmup_steps: 2}}}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_top_k: -1, every_n_epochs: 1, filename: "{{epoch}}", save_last: true}}
"""


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("optimizer", ["als", "riemannian"])
def test_tt_optimizer_resumes_bit_exactly(tmp_path, fit_cli, optimizer) -> None:
    config = tmp_path / "tt.yaml"
    config.write_text(TT_CONFIG.format(optimizer=optimizer))
    straight = fit_cli(tmp_path / "straight", config=config)
    assert not straight.model.automatic_optimization
    assert straight.trainer.global_step == 16
    half = fit_cli(tmp_path / "half", "--trainer.max_epochs=2", config=config)
    ckpt_dir = Path(half.trainer.checkpoint_callback.dirpath)
    resumed = fit_cli(
        tmp_path / "resumed", f"--ckpt_path={ckpt_dir / 'epoch=1.ckpt'}", config=config
    )
    assert resumed.trainer.global_step == 16
    a = torch.load(
        Path(straight.trainer.checkpoint_callback.dirpath) / "epoch=3.ckpt", weights_only=True
    )
    b = torch.load(
        Path(resumed.trainer.checkpoint_callback.dirpath) / "epoch=3.ckpt", weights_only=True
    )
    keys = ("state_dict", "optimizer_states", "averaging_state", "global_step", "epoch")
    for key in keys:
        assert _same(a[key], b[key]), key
    assert _same(a["callbacks"]["EMA"], b["callbacks"]["EMA"])
    state = a["optimizer_states"][0]["state"]
    assert (optimizer == "riemannian") == bool(state)  # RO keeps its momentum direction
    c = torch.load(ckpt_dir / "epoch=1.ckpt", weights_only=True)
    assert not _same(c["state_dict"], a["state_dict"])  # the second half trained
    # the loss went down and is logged as for Adam runs
    metrics = straight.trainer.callback_metrics
    assert "train/loss_epoch" in metrics and "val/loss" in metrics
    assert float(metrics["val/loss"]) < 0.9
