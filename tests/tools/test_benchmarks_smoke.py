"""Smoke test of the benchmark tools: each runs with ``--quick`` and writes valid JSON + Markdown.

No timing assertions: the tools' numbers depend on the machine. The checks are that the report
files exist, parse, carry the machine facts, and that the rows hold finite measurements (or an
explicit error naming a part that has not landed).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "tools"


def _run(tool: str, out: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(TOOLS / f"{tool}.py"), "--quick", "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((out / f"{tool}.json").read_text())
    md = (out / f"{tool}.md").read_text()
    assert report["benchmark"] == tool
    machine = report["machine"]
    for key in ("cpu_model", "cpu_count", "date_utc", "versions"):
        assert machine[key], key
    assert machine["versions"]["torch"]
    assert md.startswith("## ") and "| " in md and machine["cpu_model"] in md
    assert report["rows"], "no rows"
    return report


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_bench_startup_quick(tmp_path: Path) -> None:
    report = _run("bench_startup", tmp_path)
    rows = {r["command"]: r for r in report["rows"]}
    assert _finite(rows["import diffkit"]["median_s"])
    assert isinstance(report["heavy_modules"]["import diffkit"], list)


@pytest.mark.slow
def test_bench_sampling_quick(tmp_path: Path) -> None:
    report = _run("bench_sampling", tmp_path)
    ok = [r for r in report["rows"] if "error" not in r]
    assert ok, report["rows"]
    for r in ok:
        assert r["diffkit_nfe"] == r["nfe"]
        assert _finite(r["diffkit_sps"]) and _finite(r["bare_sps"])
        # the bare loop does the same computation (float32 rounding at most)
        assert r["max_abs_diff_vs_bare"] <= 1e-5 * (1.0 + r["output_scale"])
        # a difference of two timings: its sign is noise in the quick run, only finiteness counts
        assert _finite(r["cpu_ratio_vs_bare"]) and math.isfinite(r["overhead_ms_per_step"])
    mem = report["memory"]
    assert {(r["model"], r["impl"]) for r in mem if "error" not in r} == {
        (m, i) for m in ("resnet", "unet") for i in ("bare", "diffkit", "diffkit+trajectory")
    }, mem
    assert all(math.isfinite(r["peak_growth_mb"]) and r["rss_before_mb"] > 0 for r in mem)
    trajectory = next(r for r in mem if r["impl"] == "diffkit+trajectory" and r["model"] == "unet")
    assert trajectory["trajectory_mb"] == pytest.approx(11 * trajectory["state_mb"])


@pytest.mark.slow
def test_bench_training_quick(tmp_path: Path) -> None:
    report = _run("bench_training", tmp_path)
    ok = [r for r in report["rows"] if "error" not in r]
    assert {r["impl"] for r in ok} >= {"bare", "bare+dkloss"}, report["rows"]
    for r in ok:
        assert _finite(r["steps_per_s"]) and _finite(r["cpu_steps_per_s"])
        if r["impl"] != "diffkit":
            assert _finite(r["diffkit_cpu_time_ratio"])


@pytest.mark.slow
def test_bench_denoisers_quick(tmp_path: Path) -> None:
    report = _run("bench_denoisers", tmp_path, "--dims", "2")
    rows = report["rows"]
    trained = [r for r in rows if r["model"] != "exact score"]
    assert {(r["model"], r["residual"]) for r in trained} == {
        (m, res) for m in ("tensor_train", "resnet") for res in ("none", "gaussian")
    }
    for r in rows:
        assert math.isfinite(r["w2"]) and math.isfinite(r["sinkhorn"]) and r["w2"] >= 0
    for r in trained:
        assert r["params"] > 0 and _finite(r["fwd_bwd_ms"])
        assert math.isfinite(r["val_excess"]) and r["sigma_data"] > 0
    # Same initial weights for both residual settings: the initial excesses differ only
    # through the residual (zero network output plus the exact Gaussian eps).
    for m in ("tensor_train", "resnet"):
        by = {r["residual"]: r for r in trained if r["model"] == m}
        assert by["gaussian"]["init_excess"] != by["none"]["init_excess"]


def test_bench_samplers_quick(tmp_path: Path) -> None:
    """The exact-W2 benchmark in its smoke mode: rows with the documented keys, finite W2 from
    diffkit's samplers and (when diffusers is importable) from the diffusers sweep."""
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "bench_samplers.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "samplers.json").read_text())
    keys = {"data", "sde", "sampler", "variant", "order", "grid", "t_min", "steps", "nfe", "w2"}
    rows = report["rows"]
    assert rows and all(keys <= set(r) for r in rows)
    main = [r for r in rows if r["sde"] == "vp"]
    assert {r["grid"] for r in main} == {"uniform", "log_snr"}
    assert all(r["nfe"] == 10 and _finite(r["w2"]) for r in main)
    md = (tmp_path / "samplers.md").read_text()
    assert "## Summary" in md and (tmp_path / "samplers_w2.png").stat().st_size > 0
    try:
        import diffusers  # noqa: F401
    except ImportError:
        return
    theirs = [r for r in rows if r["sampler"].startswith("diffusers:")]
    assert theirs and all(_finite(r["w2"]) and 0 < r["nfe"] <= r["nfe_budget"] for r in theirs)
    assert report["diffusers_sweep"]["distinct_runs"] == len(theirs)
    assert "### Best of each side per NFE" in md


def test_bench_trained_samplers_quick(tmp_path: Path, tiny_fit_yaml, fit_tiny_run) -> None:
    """Sinkhorn vs NFE on a checkpoint of a tiny in-process fit (2-D moons)."""
    adam = "  optimizer: {class_path: torch.optim.Adam, init_args: {lr: 0.001}}\n"
    ckpt = fit_tiny_run(tmp_path, tiny_fit_yaml(steps=6, model=adam, sizes=(256, 64, 256, 128)))
    tool = str(TOOLS / "bench_trained_samplers.py")
    proc = subprocess.run(
        [sys.executable, tool, "--quick", "--toy", str(ckpt), "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "bench_trained_samplers.json").read_text())
    rows = report["rows"]
    assert {(r["sampler"], r["nfe_budget"]) for r in rows} >= {
        (s, n) for s in ("ddim", "deis_tab2") for n in (5, 10)
    }
    assert all(_finite(r["sinkhorn"]) and 0 < r["nfe"] <= r["nfe_budget"] for r in rows)
    assert (
        "Sinkhorn (best grid) per NFE budget"
        in (tmp_path / "out" / "bench_trained_samplers.md").read_text()
    )
