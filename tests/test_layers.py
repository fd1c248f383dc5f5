"""Imports follow the layer order: a unit imports only itself and units of lower layers.

A *unit* is a top-level module or subpackage of ``diffkit`` (``diffkit.sdes``,
``diffkit.prediction``, ...). Units of one layer are peers and do not import each other (a loss
never imports the network wrapper, data never imports the LightningModule). Every import counts,
including those inside functions and under ``TYPE_CHECKING``. The order is documented in
CONTRIBUTING.md ("Layers").
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "diffkit"

#: Lowest first. ``diffkit`` itself (``__init__``) imports nothing.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"diffkit", "registry", "seeding"}),
    frozenset({"sdes"}),
    frozenset({"prediction"}),
    frozenset(
        {
            "denoisers",
            "losses",
            "samplers",
            "metrics",
            "data",
            "guidance",
            "thresholding",
            "checkpoint",
        }
    ),
    frozenset({"module"}),
    frozenset({"callbacks"}),
    frozenset({"testing", "aliases", "cli"}),
    frozenset({"__main__"}),
)
#: Known exceptions, ``(file, imported module)``: the exact-Gaussian scores move out of sdes.
EXCEPTIONS = {("diffkit/sdes/exact.py", "diffkit.prediction")}
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every absolute import of a ``diffkit`` module in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return [(line, m) for line, m in out if m == "diffkit" or m.startswith("diffkit.")]


def _units() -> set[str]:
    return {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if _is_unit(p)}


def _is_unit(p: Path) -> bool:
    if p.is_file():
        return p.suffix == ".py" and p.stem != "__init__"
    return (p / "__init__.py").exists()


def test_every_unit_has_a_layer() -> None:
    missing = sorted(_units() - LAYER.keys())
    assert not missing, f"give {missing} a layer in tests/test_layers.py and CONTRIBUTING.md"


def test_no_import_runs_up_or_across_a_layer() -> None:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        src = _unit(".".join(rel.with_suffix("").parts))
        for line, module in _imports(path):
            dst = _unit(module)
            if dst == src or (rel.as_posix(), module) in EXCEPTIONS:
                continue
            if LAYER.get(dst, len(LAYERS)) >= LAYER.get(src, -1):
                bad.append(f"{rel}:{line} imports {module} ({src} may not import {dst})")
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_the_scan_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from diffkit.module import DiffusionModule\n"
        "def f():\n    import diffkit.cli.main\n    from torch import nn\n"
    )
    assert sorted(m for _, m in _imports(probe)) == ["diffkit.cli.main", "diffkit.module"]
