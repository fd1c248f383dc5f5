"""Startup cost: cold wall time of diffkit's entry points against ``import torch``/``lightning``.

Each command runs in a fresh interpreter (a subprocess). Repetitions are interleaved round-robin
over the commands, after one unrecorded warm-up round (so every command sees the same file cache
and the same background load), and the median is reported. Ratios are taken against
``import torch`` measured in the same run. A second part lists which heavy modules
``import diffkit`` and ``diffkit list`` leave in ``sys.modules``, and the slowest top-level
imports of ``diffkit list`` (``python -X importtime``).

Goals: ``diffkit list`` <= 1.2x ``import torch``; ``import diffkit`` imports nothing heavy.

    python tools/bench_startup.py [--out bench_out] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmark_report import ROOT, Goal, add_common_arguments, median, write_report

HEAVY = (
    "torch",
    "lightning",
    "pytorch_lightning",
    "lightning_fabric",
    "torchvision",
    "torchmetrics",
    "wandb",
    "jsonargparse",
    "numpy",
    "scipy",
    "ot",
    "tensorly",
    "matplotlib",
    "PIL",
    "diffusers",
)
CONFIG = "configs/toy/gmm_vp_resnet.yaml"


def _diffkit_cmd() -> list[str]:
    script = Path(sys.executable).with_name("diffkit")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from diffkit.cli.main import main; sys.exit(main())"]


def commands() -> dict[str, list[str]]:
    py = sys.executable
    dk = _diffkit_cmd()
    return {
        "python -c pass": [py, "-c", "pass"],
        "import torch": [py, "-c", "import torch"],
        "import lightning": [py, "-c", "import lightning"],
        "import diffkit": [py, "-c", "import diffkit"],
        "diffkit list": [*dk, "list"],
        "diffkit fit --print_config": [*dk, "fit", "-c", CONFIG, "--print_config"],
    }


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def time_once(cmd: list[str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    return time.perf_counter() - t0, proc.returncode, (proc.stderr or proc.stdout)[-400:]


_PROBE = """
import json, sys
{body}
print("@@" + json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def heavy_modules(body: str) -> list[str] | str:
    """Heavy top-level modules present in ``sys.modules`` after running ``body``."""
    code = _PROBE.format(body=body, heavy=HEAVY)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=_env()
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@"):
            return json.loads(line[2:])
    return f"failed: {(proc.stderr or proc.stdout)[-300:]}"


_LIST_BODY = """
sys.argv = ["diffkit", "list"]
try:
    from diffkit.cli.main import main
    main()
except SystemExit:
    pass
"""


def slowest_imports(cmd_body: str, top: int = 10) -> list[dict[str, object]]:
    """The ``top`` most expensive packages (top-level names, at any import depth; cumulative
    time of their first import) under ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import sys\n" + cmd_body],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
    )
    best: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        name = name.strip()
        try:
            seconds = int(cumulative.strip()) / 1e6
        except ValueError:
            continue
        if "." not in name or name.startswith("diffkit."):
            best[name] = max(best.get(name, 0.0), seconds)
    rows = [{"module": k, "cumulative_s": v} for k, v in best.items()]
    rows.sort(key=lambda r: -float(r["cumulative_s"]))
    return rows[:top]


_FIT_BODY = f"""
sys.argv = ["diffkit", "fit", "-c", "{CONFIG}", "--print_config"]
try:
    from diffkit.cli.main import main
    main()
except SystemExit:
    pass
"""


def main(argv: list[str] | None = None) -> int:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per command")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    cmds = commands()
    if args.quick:  # the smoke test needs seconds, not a Lightning import per command
        cmds = {k: v for k, v in cmds.items() if k in ("python -c pass", "import diffkit")}

    times: dict[str, list[float]] = {k: [] for k in cmds}
    errors: dict[str, str] = {}
    for rnd in range(repeats + (0 if args.quick else 1)):
        for name, cmd in cmds.items():
            dt, rc, tail = time_once(cmd)
            if rc != 0:
                errors[name] = f"exit {rc}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
            elif rnd > 0 or args.quick:  # round 0 warms the file cache
                times[name].append(dt)

    base = median(times.get("import torch", [])) if "import torch" in times else None
    base_l = median(times.get("import lightning", [])) if "import lightning" in times else None
    rows = []
    for name, cmd in cmds.items():
        med = median(times[name]) if times[name] else None
        rows.append(
            {
                "command": name,
                "median_s": med,
                "min_s": min(times[name]) if times[name] else None,
                "runs": len(times[name]),
                "ratio_vs_import_torch": (med / base) if (med and base) else None,
                "ratio_vs_import_lightning": (med / base_l) if (med and base_l) else None,
                "error": errors.get(name),
                "argv": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
            }
        )

    heavy = {"import diffkit": heavy_modules("import diffkit")}
    if not args.quick:
        heavy["diffkit list"] = heavy_modules(_LIST_BODY)
    imports = {}
    if not args.quick:
        imports["diffkit list"] = slowest_imports(_LIST_BODY)
        imports["diffkit fit --print_config"] = slowest_imports(_FIT_BODY)

    by_name = {r["command"]: r for r in rows}
    goals = [
        Goal(
            "diffkit list / import torch",
            by_name.get("diffkit list", {}).get("ratio_vs_import_torch"),
            1.2,
        ),
        Goal(
            "heavy modules imported by `import diffkit` (count)",
            float(len(heavy["import diffkit"]))
            if isinstance(heavy["import diffkit"], list)
            else None,
            0.0,
            note=str(heavy["import diffkit"]),
        ),
    ]
    extra_md = ["Heavy modules left in `sys.modules`:", ""]
    for k, v in heavy.items():
        extra_md.append(f"- `{k}`: {', '.join(v) if isinstance(v, list) and v else v or 'none'}")
    for k, v in imports.items():
        extra_md += [
            "",
            f"Most expensive imports of `{k}` (`-X importtime`, cumulative, nested):",
            "",
        ]
        extra_md += [f"- `{r['module']}` {float(r['cumulative_s']):.3f} s" for r in v]
    write_report(
        "bench_startup",
        args.out,
        title="Startup cost (cold subprocess wall time)",
        rows=rows,
        columns=[
            "command",
            "median_s",
            "min_s",
            "runs",
            "ratio_vs_import_torch",
            "ratio_vs_import_lightning",
            "error",
        ],
        goals=goals,
        settings={"repeats": repeats, "warmup_rounds": 0 if args.quick else 1},
        notes=[
            "Fresh interpreter per run; one unrecorded warm-up round, then rounds interleaved "
            "over the commands; median reported.",
            "Absolute times are noisy on a shared 2-core machine; the ratios are measured side "
            "by side in one run.",
        ],
        extra={"heavy_modules": heavy, "slowest_imports": imports, "raw_times": times},
        extra_md="\n".join(extra_md),
    )
    print((args.out / "bench_startup.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
