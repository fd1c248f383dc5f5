"""Smoke test of tools/denoiser_learning.py --quick: the fit/sample/metric pipeline end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "denoiser_learning.py"


def _tool():
    spec = importlib.util.spec_from_file_location("denoiser_learning", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["denoiser_learning"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_mode_writes_json_and_table(tmp_path: Path) -> None:
    tool = _tool()
    cases = ["resnet_gmm2", "tensor_train_moons"]
    code = tool.main(["--quick", "--out", str(tmp_path), "--cases", *cases])
    assert code == 0
    report = json.loads((tmp_path / "denoiser_learning.json").read_text())
    results = {r["case"]: r for r in report["results"]}
    assert sorted(results) == sorted(cases)
    for r in results.values():
        assert "error" not in r
        for key in ("sinkhorn_before", "sinkhorn_after", "sinkhorn_floor"):
            assert math.isfinite(r[key]) and r[key] > 0
        # an (almost) untrained model is far from the data; two data draws are close
        assert r["sinkhorn_before"] > 10 * r["sinkhorn_floor"]
        assert r["nfe"] == 20 and r["train_steps"] == 2
    table = (tmp_path / "denoiser_learning.md").read_text()
    assert all(f"| {c} |" in table for c in cases)


def test_unknown_case_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown"):
        _tool().main(["--quick", "--out", str(tmp_path), "--cases", "nope"])
