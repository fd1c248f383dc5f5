"""``diffkit list [KIND] [--json] [--check] [--load]``: every registered part and plugin.

The plain listing reads the built-in table and installed distributions' metadata only: it
imports neither torch nor any plugin. ``--load`` imports every target to verify it and shows its
summary line and signature; ``--check`` (implies ``--load``) exits 1 when anything is broken,
shadowed or ambiguous, which is what a plugin's CI runs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["PROBLEM_STATUSES", "build_parser", "list_main"]

PROBLEM_STATUSES: tuple[str, ...] = ("broken", "shadowed", "ambiguous")
COLUMNS: tuple[str, ...] = ("kind", "name", "target", "source", "status")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``diffkit list`` (plain argparse: cheap to build)."""
    parser = argparse.ArgumentParser(
        prog="diffkit list",
        description="List registered parts (built-in, in-process and plugins) and their status.",
    )
    parser.add_argument(
        "kind",
        nargs="?",
        default=None,
        help="one kind (sde, denoiser, sampler, loss, metric, datamodule, callback); default: all",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of records")
    parser.add_argument("--load", action="store_true", help="import every target to verify it")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if any entry is broken, shadowed or ambiguous (implies --load)",
    )
    return parser


def _resolve_kinds(kind: str | None) -> list[str]:
    from diffkit.registry import REGISTRIES, did_you_mean, suggest

    if kind is None:
        return list(REGISTRIES)
    key = kind.strip().lower()
    plurals = {k: r.group.rsplit(".", 1)[-1] for k, r in REGISTRIES.items()}
    for k in REGISTRIES:
        if key in (k, plurals[k], "data" if k == "datamodule" else k):
            return [k]
    aliases = [*REGISTRIES, *plurals.values()]
    raise ValueError(
        f"unknown kind '{kind}'. {did_you_mean(suggest(key, aliases))}"
        f"Kinds: {', '.join(REGISTRIES)}"
    )


def _describe(target: str) -> dict[str, Any]:
    """Summary line and signature of an (already imported) target."""
    from diffkit.registry import import_target

    try:
        obj = import_target(target)
    except Exception:
        return {}
    doc = inspect.getdoc(obj) or ""
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        sig = ""
    return {"summary": doc.strip().splitlines()[0] if doc.strip() else "", "signature": sig}


def _records(kinds: list[str], load: bool) -> list[dict[str, Any]]:
    from diffkit.registry import REGISTRIES

    out: list[dict[str, Any]] = []
    for kind in kinds:
        registry = REGISTRIES[kind]
        for entry in registry.load_all() if load else registry.entries():
            rec = entry.to_dict()
            if load and entry.status != "broken":
                rec.update(_describe(entry.target))
                if entry.source == "in-process" and registry.description(entry.name):
                    rec["summary"] = registry.description(entry.name)
            out.append(rec)
    return out


def _table(records: list[dict[str, Any]], load: bool) -> str:
    header = [c.upper() for c in COLUMNS]
    rows = [[str(r[c]) for c in COLUMNS] for r in records]
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(header, widths, strict=True)).rstrip()]
    for rec, row in zip(records, rows, strict=True):
        lines.append("  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)).rstrip())
        if load and rec.get("summary"):
            lines.append(f"    {rec['summary']}")
        if load and rec.get("signature"):
            lines.append(f"    {rec['name']}{rec['signature']}")
        if rec.get("error"):
            lines.append(f"    error: {rec['error']}")
    if not records:
        lines.append("(nothing registered)")
    return "\n".join(lines)


def list_main(argv: Sequence[str] | None = None) -> int:
    """Run ``diffkit list``; returns the exit code (0 ok, 1 problems under ``--check``, 2 usage)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        kinds = _resolve_kinds(args.kind)
    except ValueError as exc:
        sys.stderr.write(f"diffkit list: error: {exc}\n")
        return 2
    load = args.load or args.check
    records = _records(kinds, load)
    if args.json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    else:
        sys.stdout.write(_table(records, load) + "\n")
    if args.check:
        bad = [r for r in records if r["status"] in PROBLEM_STATUSES]
        for r in bad:
            sys.stderr.write(
                f"diffkit list --check: {r['kind']} '{r['name']}' ({r['source']} -> "
                f"{r['target']}) is {r['status']}: {r['error']}\n"
            )
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(list_main(sys.argv[1:]))
