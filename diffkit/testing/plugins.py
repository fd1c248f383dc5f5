"""Real (not mocked) plugin distributions for tests.

:func:`fake_distribution` writes a genuine ``<name>-<version>.dist-info`` (``METADATA``,
``entry_points.txt``) and the package's source files into a directory it puts on ``sys.path``,
so ``importlib.metadata`` finds the distribution with its name and version and entry points load
(or fail) exactly as they would after ``pip install``. Plugin authors use the :func:`fake_plugin`
fixture: add ``pytest_plugins = ["diffkit.testing.plugins"]`` to their ``conftest.py``::

    def test_my_entry(fake_plugin):
        fake_plugin("myplug", {"diffkit.sdes": {"mine": "myplug.sdes:MySDE"}},
                    modules={"myplug.sdes": "from diffkit.sdes.vp import VPSDE as MySDE"})
        assert SDES.get("mine").__name__ == "VPSDE"
"""

from __future__ import annotations

import gc
import importlib
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diffkit.registry import reset_plugin_state

__all__ = ["fake_distribution", "fake_plugin", "remove_distribution"]


def _module_file(root: Path, module: str) -> Path:
    """``"pkg.sub"`` -> ``root/pkg/sub.py`` (``"pkg"`` -> ``root/pkg/__init__.py``); creates the
    package directories and their empty ``__init__.py`` files."""
    if module.endswith(".py") or "/" in module:
        path = root / module
    else:
        parts = module.split(".")
        pkg = root.joinpath(*parts)
        path = (
            pkg / "__init__.py"
            if len(parts) == 1
            else root.joinpath(*parts[:-1], f"{parts[-1]}.py")
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    d = path.parent
    while d != root:
        init = d / "__init__.py"
        if not init.exists():
            init.write_text("")
        d = d.parent
    return path


def fake_distribution(
    tmp_path: Path | str,
    name: str,
    entry_points: dict[str, dict[str, str]],
    modules: dict[str, str] | None = None,
    version: str = "0.1.0",
) -> Path:
    """Install a real distribution ``name==version`` into a fresh directory on ``sys.path``.

    Args:
        tmp_path: parent directory (pytest's ``tmp_path``).
        name: distribution name, e.g. ``"fakeplug"``.
        entry_points: group -> entry name -> ``"module:attr"``, e.g.
            ``{"diffkit.sdes": {"subvp": "fakeplug.sdes:SubVP"}}``.
        modules: module name (``"fakeplug.sdes"``) or relative file path -> source text.
        version: distribution version.

    Returns:
        The directory put on ``sys.path`` (pass it to :func:`remove_distribution`).
    """
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise ValueError(f"distribution name {name!r} is not a valid project name")
    root = Path(tmp_path) / f"site-{name}-{version}"
    root.mkdir(parents=True, exist_ok=False)
    info = root / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines: list[str] = []
    for group, entries in entry_points.items():
        lines.append(f"[{group}]")
        lines += [f"{key} = {target}" for key, target in entries.items()]
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    (info / "RECORD").write_text("")
    for module, source in (modules or {}).items():
        _module_file(root, module).write_text(source)
    sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    reset_plugin_state()
    return root


def remove_distribution(root: Path | str, *, collect: bool = True) -> None:
    """Undo :func:`fake_distribution`: drop it from ``sys.path`` and its modules from
    ``sys.modules``, and reset the registries' plugin state.

    ``collect`` runs the garbage collector so the plugin's classes leave their bases'
    ``__subclasses__()`` (jsonargparse's subclass walk would warn about their vanished modules).
    """
    root_s = str(root)
    while root_s in sys.path:
        sys.path.remove(root_s)
    for mod_name, mod in list(sys.modules.items()):
        file = getattr(mod, "__file__", None) or ""
        if file.startswith(root_s):
            del sys.modules[mod_name]
    importlib.invalidate_caches()
    reset_plugin_state()
    if collect:
        gc.collect()


@pytest.fixture
def fake_plugin(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """A factory with :func:`fake_distribution`'s signature minus ``tmp_path``; every
    distribution it makes is removed after the test."""
    made: list[Path] = []

    def make(
        name: str,
        entry_points: dict[str, dict[str, str]],
        modules: dict[str, str] | None = None,
        version: str = "0.1.0",
    ) -> Path:
        root = fake_distribution(tmp_path, name, entry_points, modules, version)
        made.append(root)
        return root

    try:
        yield make
    finally:
        for i, root in enumerate(reversed(made)):
            remove_distribution(root, collect=i == len(made) - 1)
