"""Shared test configuration: offline W&B, few threads, no stray plugins."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")

import torch

# One intra-op thread: the suite is many small float64 ops, and two threads on two cores
# oversubscribe as soon as anything else runs (DDP ranks, subprocesses).
torch.set_num_threads(1)
