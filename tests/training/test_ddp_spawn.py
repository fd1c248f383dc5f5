"""ddp_spawn pickles the module, the datamodule and the callbacks into 2 CPU processes (gloo):
everything diffkit trains with must survive that."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from diffkit.callbacks.ema import EMA
from diffkit.callbacks.run_summary import RunSummary
from diffkit.callbacks.sample_grid import SampleGrid
from diffkit.data.images import DigitsDataModule


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_spawn_trains_digits_with_ema(tmp_path, make_module, make_trainer):
    dm = DigitsDataModule(batch_size=100, num_val=100, random_flip=True)
    module = make_module(data_shape=dm.data_shape)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    # RunSummary and SampleGrid resolve the run directory with collectives on every rank and no
    # logger: this hung when trainer.log_dir (itself a broadcast) was read on rank 0 only.
    grid = SampleGrid(every_n_epochs=1, num_samples=8)
    callbacks = [EMA(decay=0.9), ckpt, grid, RunSummary()]
    tr = make_trainer(tmp_path, callbacks, max_epochs=1, strategy="ddp_spawn", devices=2)
    tr.fit(module, dm)
    assert tr.state.finished
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    # 1400 training images, 100 per rank and step, 2 ranks: 7 steps (the parent's counter stays 0).
    assert state["global_step"] == 7
    assert int(state["averaging_state"]["n_averaged"]) == 7
    assert list(tmp_path.rglob("*.png")), "the sample grid was not written"
