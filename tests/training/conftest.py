"""Small real training setups (toy data, tiny ResNet-MLP) shared by the training tests."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny tensors gain nothing from two, and on a loaded 2-core machine
    every multi-threaded op waits for a second core (measured: a 56-step fit 40 s -> 12 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_module(
    data_shape=(2,), lr: float = 1e-3, scheduler: bool = False, seed: int = 0, optimizer=None
):
    from diffkit.denoisers.resnet import ResNetMLP
    from diffkit.module import DiffusionModule
    from diffkit.samplers.ddim import DDIM
    from diffkit.sdes.vp import VPSDE

    sched = None
    if scheduler:
        sched = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5, gamma=0.8)
    return DiffusionModule(
        VPSDE(),
        functools.partial(ResNetMLP, width=32, depth=2, emb_dim=16),
        sampler=DDIM(steps=8),
        data_shape=data_shape,
        optimizer=optimizer or functools.partial(torch.optim.AdamW, lr=lr),
        lr_scheduler=sched,
        seed=seed,
    )


def trainer(root: Path, callbacks: list, **kwargs) -> L.Trainer:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        deterministic=True,
    )
    defaults.update(kwargs)
    return L.Trainer(callbacks=callbacks, **defaults)


@pytest.fixture
def make_module():
    return tiny_module


@pytest.fixture
def make_trainer():
    return trainer


TOY_CONFIG = """
seed_everything: 0
model:
  sde: vp
  denoiser: {class_path: resnet, init_args: {width: 32, depth: 2, emb_dim: 16}}
  sampler: {class_path: ddim, init_args: {steps: 8}}
  optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.001}}
  lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 5, gamma: 0.8}}
  seed: 0
data:
  class_path: digits
  init_args: {batch_size: 100, num_val: 100, random_flip: true}
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 4
  deterministic: true
  enable_progress_bar: false
  enable_model_summary: false
  logger: false
  callbacks:
    - {class_path: ema, init_args: {decay: 0.9, warmup_steps: 3}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {save_top_k: -1, every_n_epochs: 1, filename: "{epoch}", save_last: true}
"""


def write_config(tmp_path: Path, text: str = TOY_CONFIG) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def cli_fit(root: Path, *args: str, config: Path):
    """``diffkit fit`` in-process; returns the DiffkitCLI."""
    from diffkit.cli.lightning_cli import DiffkitCLI

    return DiffkitCLI(["fit", "-c", str(config), f"--trainer.default_root_dir={root}", *args])


@pytest.fixture
def toy_config(tmp_path):
    return write_config(tmp_path)


@pytest.fixture
def fit_cli():
    return cli_fit
