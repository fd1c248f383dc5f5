"""What every benchmark in ``tools/`` writes: machine facts plus rows, as JSON and Markdown.

Each tool calls :func:`write_report` once with its rows (flat dicts), the columns to tabulate, the
goals it checks and free-form notes. Machine facts are read without importing torch or lightning
in the caller (versions come from package metadata), so the startup benchmark can use this module
without disturbing what it measures.

Ratios are only meaningful when both sides ran in the same process (or the same tool run,
interleaved) on the same inputs; every tool reports them that way.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "Goal",
    "add_common_arguments",
    "machine_info",
    "markdown_table",
    "median",
    "median_se",
    "write_report",
]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "torch",
    "lightning",
    "torchvision",
    "torchmetrics",
    "jsonargparse",
    "wandb",
    "numpy",
    "diffusers",
    "diffkit",
)


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--out DIR`` (default ``bench_out/``) and ``--quick`` (a few seconds, for smoke tests)."""
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output directory")
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one repetition (smoke test only)"
    )
    return parser


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return float(statistics.median(vals)) if vals else float("nan")


def median_se(values: Iterable[float]) -> float:
    """Standard error of the median of ``values``: ``1.2533 sigma / sqrt(n)`` with the robust
    ``sigma = 1.4826 MAD`` (NaN below 3 values)."""
    vals = list(values)
    if len(vals) < 3:
        return float("nan")
    med = statistics.median(vals)
    mad = statistics.median(abs(v - med) for v in vals)
    return float(1.2533 * 1.4826 * mad / len(vals) ** 0.5)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    """CPU model, core counts, load, Python, package versions, git commit, UTC date."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    threads = None
    if "torch" in sys.modules:  # only report what the caller already imported
        threads = sys.modules["torch"].get_num_threads()
    return {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "load_average_1_5_15": load,
        "torch_threads": threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
        "git_commit": _git_commit(),
    }


class Goal:
    """A target ratio: ``value <= limit`` passes (e.g. diffkit time / bare time <= 1.10).

    ``noise`` (optional) is the standard error of ``value`` across rounds: a value above the
    limit by less than two standard errors is reported as ``within noise``, not as met.
    """

    def __init__(
        self,
        name: str,
        value: float | None,
        limit: float,
        note: str = "",
        noise: float | None = None,
    ) -> None:
        self.name, self.value, self.limit, self.note = name, value, float(limit), note
        self.noise = noise

    @property
    def status(self) -> str:
        if self.value is None or self.value != self.value:  # missing or NaN
            return "not measured"
        if self.value <= self.limit:
            return "met"
        if self.noise is not None and self.value - 2 * self.noise <= self.limit:
            return "within noise"
        return "MISSED"

    def as_dict(self) -> dict[str, Any]:
        return {
            "goal": self.name,
            "value": self.value,
            "limit": self.limit,
            "status": self.status,
            "note": self.note,
            "noise": self.noise,
        }


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "–"
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 1000:
            return f"{value:,.0f}"
        if mag >= 100:
            return f"{value:.1f}"
        if mag >= 0.01:
            return f"{value:.3g}" if mag < 10 else f"{value:.2f}"
        return f"{value:.2e}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) or "–"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub Markdown table of ``rows`` restricted to ``columns`` (missing cells: ``–``)."""
    head = "| " + " | ".join(columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def _machine_md(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items() if v is not None)
    return (
        f"Machine: {info['cpu_model']}, {info['cpus_usable']} usable of {info['cpu_count']} "
        f"cores, load average {info['load_average_1_5_15']}, Python {info['python']}"
        + (f", torch threads {info['torch_threads']}" if info["torch_threads"] else "")
        + f". Versions: {versions}. Commit {info['git_commit']}, {info['date_utc']} UTC."
    )


def write_report(
    name: str,
    out_dir: Path,
    *,
    title: str,
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    goals: Sequence[Goal] = (),
    notes: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
    extra_md: str = "",
    settings: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``out_dir/<name>.json`` and ``out_dir/<name>.md``; return both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    payload = {
        "benchmark": name,
        "title": title,
        "machine": info,
        "settings": settings or {},
        "rows": list(rows),
        "goals": [g.as_dict() for g in goals],
        "notes": list(notes),
        **(extra or {}),
    }
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")

    parts = [f"## {title}", "", _machine_md(info), ""]
    if settings:
        parts += ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".", ""]
    parts += [markdown_table(rows, columns), ""]
    if goals:
        parts += [
            markdown_table(
                [g.as_dict() for g in goals], ["goal", "value", "noise", "limit", "status", "note"]
            ),
            "",
        ]
    if extra_md:
        parts += [extra_md.rstrip(), ""]
    parts += [f"- {n}" for n in notes]
    md_path = out_dir / f"{name}.md"
    md_path.write_text("\n".join(parts).rstrip() + "\n")
    return json_path, md_path


START, END = "<!-- results:start -->", "<!-- results:end -->"


def update_docs(doc: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Replace the text between ``START`` and ``END`` in ``doc`` by the ``<name>.md`` reports
    found in ``out_dir`` (headings demoted one level)."""
    text = Path(doc).read_text()
    if START not in text or END not in text:
        raise ValueError(f"{doc} needs the markers {START} and {END}")
    parts = []
    for name in names:
        md = Path(out_dir) / f"{name}.md"
        if md.exists():
            parts.append(md.read_text().replace("\n## ", "\n### ").replace("## ", "### ", 1))
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    Path(doc).write_text(head + START + "\n\n" + "\n".join(parts).strip() + "\n\n" + END + tail)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Copy the latest benchmark reports into docs/benchmarks.md"
    )
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="reports directory")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    update_docs(args.doc, args.out, ["bench_startup", "bench_training", "bench_sampling"])
    print(f"updated {args.doc}")
