"""Per-(seed, stream, rank, step) random generators.

Training, validation and data augmentation each draw from their own ``torch.Generator``, seeded
from ``(seed, stream, rank, step)``, so a resumed run draws exactly the noise of an uninterrupted
one and ranks never share a stream. Library code never touches the global RNG.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["step_generator"]


def _seed_from(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (numpy's SeedSequence hashing: nearby tuples decorrelate)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def step_generator(
    seed: int, rank: int, step: int, *, stream: int = 0, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The generator of one optimiser step of one rank (``stream`` 0: training, 1: validation)."""
    return torch.Generator(device=device).manual_seed(_seed_from(seed, stream, rank, step))
