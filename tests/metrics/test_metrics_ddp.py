"""Every metric gives the same value on 2 gloo ranks (sharded, states gathered) as on 1."""

from __future__ import annotations

import importlib.util
import multiprocessing
import socket
from pathlib import Path

import pytest
import torch

WORKER = Path(__file__).with_name("ddp_metrics_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.ddp
def test_two_ranks_equal_one_rank(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("ddp_metrics_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    single = worker.run_metrics(0, 1)

    out = tmp_path / "ddp.pt"
    port = str(_free_port())
    # fork: the children inherit the imported modules (a fresh interpreter costs ~5-15 s here)
    ctx = multiprocessing.get_context("fork")
    procs = [
        ctx.Process(target=worker.run_rank, args=(rank, 2, port, str(out))) for rank in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    multi = torch.load(out)
    assert set(multi) == set(single)
    for name, res in single.items():
        for key, value in res.items():
            got = multi[name][key]
            assert torch.allclose(got.double(), value.double(), rtol=1e-9, atol=1e-10), (
                f"{name}.{key}: 2 ranks {got} vs 1 rank {value}"
            )
    assert multi["w2"]["n"].item() == 101 and multi["w2"]["n_reference"].item() == 90
    assert multi["fid"]["n"].item() == 41 and multi["nll"]["n"].item() == 9
