"""Seeded per-epoch shuffling that gives DDP ranks disjoint shares of the same global batches.

A ``torch.utils.data.DistributedSampler`` with ``shuffle=True`` draws one permutation per
``(seed, epoch)`` and hands rank ``r`` of ``W`` the indices ``r, r + W, ...`` of it. With
``W = 1`` that is the plain permutation, so at a per-rank batch of ``B / W`` the ranks' batches
together are exactly the single-process batches of size ``B``. Lightning leaves a loader that
already has a ``DistributedSampler`` alone (otherwise it wraps the sampler and shuffles again),
and calls ``set_epoch`` every epoch, so a run resumed at an epoch boundary sees the same order.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset, DistributedSampler

__all__ = ["epoch_shuffle"]


def epoch_shuffle(data: Dataset, seed: int, trainer: Any | None) -> DistributedSampler:
    """The training sampler of ``data`` for this process (``trainer`` gives rank and world)."""
    world = int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1
    rank = int(getattr(trainer, "global_rank", 0) or 0) if trainer is not None else 0
    return DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=seed)
