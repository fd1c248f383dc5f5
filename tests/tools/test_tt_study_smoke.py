"""Smoke test of ``tools/tt_study.py``: a few steps of a few cells write valid rows, and the
report tables are built from them (no quality assertions: three steps train nothing)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tt_study_quick_run_writes_rows_and_report(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import tt_study
    finally:
        sys.path.remove(str(ROOT / "tools"))
    out = tmp_path / "study.json"
    args = ["--quick", "--datasets", "gas", "--seeds", "0", "--samples", "32",
            "--nll-points", "4", "--ddim-steps", "3", "--out", str(out)]  # fmt: skip
    assert tt_study.main(args) == 0
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert payload["uci_files"] == "stand-ins"
    models = {(r["dataset"], r["model"], r["optimizer"]) for r in rows}
    for dataset in ("gas",):
        for model, opt in (("ftt", "als"), ("ftt", "riemannian"), ("ftt", "adam"),
                           ("resnet", "adam"), ("data", None), ("prior", None)):  # fmt: skip
            assert (dataset, model, opt) in models
    for r in rows:
        for key in ("dataset", "model", "optimizer", "basis", "rank", "params", "seed",
                    "sinkhorn", "w2", "nll", "train_s"):  # fmt: skip
            assert key in r
        assert math.isfinite(r["sinkhorn"]) and math.isfinite(r["w2"])
        if r["model"] in ("ftt", "resnet"):
            assert r["params"] > 0 and math.isfinite(r["nll"]) and r["history"]
    table = tt_study.report(rows)
    assert "#### gas (D = 8)" in table and "| ftt | als | legendre | 4 |" in table
