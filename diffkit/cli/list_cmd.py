"""``diffkit list [KIND] [--json] [--check] [--load]``: every registered part and plugin.

The plain listing reads the built-in table and installed distributions' metadata only: it
imports neither torch nor any plugin. It still finds a plugin part whose module or class is
missing, or whose module has a syntax error, by reading the module's source without running it
(status ``broken``); a part that fails only when imported shows as ``not loaded`` until
``--load``. ``--load`` imports every target to verify it and shows its
summary line and signature; ``--check`` (implies ``--load``) exits 1 when anything is broken,
shadowed or ambiguous, which is what a plugin's CI runs.
"""

from __future__ import annotations

import argparse
import ast
import importlib.machinery
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffkit.cli.boundary import answer, split_traceback_flag
from diffkit.errors import UserError

__all__ = ["PROBLEM_STATUSES", "build_parser", "list_main", "static_problem"]

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
    raise UserError(
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


def _defined_names(tree: ast.Module) -> set[str] | None:
    """Top-level names a module's source defines (``None`` when they are dynamic)."""
    names: set[str] = set()
    body = list(tree.body)
    while body:
        node = body.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == "__getattr__":
                return None
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
            for field in ("body", "orelse", "finalbody", "handlers"):
                body += getattr(node, field, [])
        elif isinstance(node, ast.ExceptHandler):
            body += node.body
    return names


def static_problem(target: str) -> str | None:
    """Why ``"module:attr"`` cannot import, found without running any of its code (a missing
    module or attribute, a syntax error), or ``None`` when nothing is visibly wrong."""
    module, _, attr = target.partition(":")
    parts = module.split(".")
    if not all(p.isidentifier() for p in parts):
        return f"ValueError: '{target}' is not a 'package.module:attr' path"
    spec, path = None, None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        if name in sys.modules:
            spec = getattr(sys.modules[name], "__spec__", None)
        elif i == 0 and name in sys.builtin_module_names:
            return None
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return f"ModuleNotFoundError: No module named '{name}'"
        path = spec.submodule_search_locations
        if path is None and i < len(parts) - 1:
            return f"ModuleNotFoundError: No module named '{'.'.join(parts[: i + 2])}'"
    origin = getattr(spec, "origin", None)
    if not attr or not origin or not origin.endswith(".py"):
        return None
    try:
        tree = ast.parse(Path(origin).read_bytes(), origin)
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} ({origin}, line {exc.lineno})"
    except (OSError, ValueError):
        return None
    names = _defined_names(tree)
    top = attr.split(".")[0]
    if names is not None and top not in names:
        return f"AttributeError: module '{module}' has no attribute '{top}'"
    return None


def _records(kinds: list[str], load: bool) -> list[dict[str, Any]]:
    from diffkit.registry import REGISTRIES

    out: list[dict[str, Any]] = []
    for kind in kinds:
        registry = REGISTRIES[kind]
        for entry in registry.load_all() if load else registry.entries():
            rec = entry.to_dict()
            if not load and entry.status == "not loaded":
                problem = static_problem(entry.target)
                if problem is not None:
                    rec.update(status="broken", error=problem)
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
    if not load and any(r["status"] == "not loaded" for r in records):
        lines.append(
            "(not loaded: a plugin part not imported yet; 'diffkit list --load' checks it)"
        )
    return "\n".join(lines)


def list_main(argv: Sequence[str] | None = None) -> int:
    """Run ``diffkit list``; returns the exit code (0 ok, 1 problems under ``--check``, 2 usage)."""
    args, show_traceback = split_traceback_flag(sys.argv[1:] if argv is None else argv)
    return answer(lambda: _list(args), show_traceback=show_traceback)


def _list(argv: list[str]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    kinds = _resolve_kinds(args.kind)
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
