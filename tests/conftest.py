"""Shared test configuration: offline W&B, few threads, no stray plugins."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import pytest
import torch

# One intra-op thread: the suite is many small float64 ops, and two threads on two cores
# oversubscribe as soon as anything else runs (DDP ranks, subprocesses).
torch.set_num_threads(1)


# ------------------------------------------------------------ a tiny fit to sample from
# Several test files train a tiny 2-D model for a few steps and then drive ``diffkit sample``,
# ``evaluate`` or ``fit --ckpt_path`` on its checkpoint. They share this config; each names only
# what it changes (the sampler, the data sizes, extra model keys or callbacks).
def _tiny_fit_yaml(
    *,
    steps: int = 3,
    sampler: str = "ddim",
    model: str = "",
    data: str = "",
    sizes: tuple[int, int, int, int] = (128, 32, 32, 64),
    max_epochs: int = 1,
    checkpoint: str = "{save_last: true}",
    callbacks: str = "",
) -> str:
    """The YAML of a tiny ``diffkit fit``: a small ResNet on 2-D moons, one epoch, ``last.ckpt``.

    ``model``, ``data`` and ``callbacks`` are YAML lines indented as in the file (``data``
    replaces the moons data section); ``sizes`` are moons' num_train, num_val, num_test and
    batch_size; ``checkpoint`` is the ``init_args`` of the ``ModelCheckpoint``.
    """
    if not data:
        n_train, n_val, n_test, batch = sizes
        data = (
            "  class_path: toy2d\n  init_args: {dataset: moons, "
            f"num_train: {n_train}, num_val: {n_val}, num_test: {n_test}, batch_size: {batch}}}\n"
        )
    return f"""
seed_everything: 0
model:
  sde: vp
  denoiser: {{class_path: resnet, init_args: {{width: 16, depth: 1, emb_dim: 8}}}}
  sampler: {{class_path: {sampler}, init_args: {{steps: {steps}}}}}
{model}data:
{data}trainer:
  accelerator: cpu
  devices: 1
  max_epochs: {max_epochs}
  limit_val_batches: 0
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {checkpoint}
{callbacks}"""


def _fit_tiny_run(root, config: str):
    """Write ``root/fit.yaml``, run ``diffkit fit`` on it in-process; return ``last.ckpt``."""
    from diffkit.cli.main import main

    (root / "fit.yaml").write_text(config)
    assert main(["fit", "-c", str(root / "fit.yaml"), f"--trainer.default_root_dir={root}"]) == 0
    ckpt = root / "checkpoints" / "last.ckpt"
    assert ckpt.is_file(), sorted(root.rglob("*"))
    return ckpt


@pytest.fixture(scope="session")
def tiny_fit_yaml():
    """:func:`_tiny_fit_yaml`: the config text of a tiny fit, with overrides."""
    return _tiny_fit_yaml


@pytest.fixture(scope="session")
def fit_tiny_run():
    """:func:`_fit_tiny_run`: train a tiny fit from a config in a folder; its ``last.ckpt``."""
    return _fit_tiny_run
