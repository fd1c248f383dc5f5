"""A callback the DDP test loads by class path: what each rank trained on, and its weights."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback


class RankProbe(Callback):
    """Writes ``<out_dir>/rank<r>.pt``: world size, steps, per-step batch sums and sizes, and the
    initial and final parameters (flattened, float64)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.sums: list[float] = []
        self.sizes: list[int] = []

    def on_train_start(self, trainer, pl_module):
        self.init = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.sums.append(float(batch["x"].double().sum()))
        self.sizes.append(int(batch["x"].shape[0]))

    def on_train_end(self, trainer, pl_module):
        params = torch.cat([p.detach().double().flatten() for p in pl_module.parameters()])
        out = Path(self.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "world_size": trainer.world_size,
                "global_step": trainer.global_step,
                "sums": self.sums,
                "sizes": self.sizes,
                "params": params,
                "init": self.init,
                "pid": os.getpid(),
                "threads": torch.get_num_threads(),
            },
            out / f"rank{trainer.global_rank}.pt",
        )
