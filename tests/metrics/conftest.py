"""Metric tests run single-threaded: tiny float64 linear algebra gains nothing from threads, and
on a shared 2-core machine two intra-op threads per process slow the ODE solves many-fold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
