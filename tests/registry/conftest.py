"""Registry tests: real fake distributions (``fake_plugin``) and plugin autoload switched on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from diffkit.registry import DISABLE_ENV, SDES
from diffkit.testing.plugins import fake_plugin  # noqa: F401  (fixture)

#: A plugin package with one good SDE, a non-SDE class and two factories.
PLUGIN_SDES = '''
from diffkit.sdes.vp import VPSDE


class SubVP(VPSDE):
    """A plugin SDE (a VP SDE under another name)."""


class NotAnSDE:
    """Not a LinearSDE."""


def make_sub(beta_max: float = 5.0) -> SubVP:
    """A factory preset."""
    return SubVP(beta_max=beta_max)


def make_int() -> int:
    return 1
'''


@pytest.fixture
def plugin_sdes() -> str:
    """Source of a plugin module ``SubVP``, ``NotAnSDE``, ``make_sub``, ``make_int``."""
    return PLUGIN_SDES


@pytest.fixture(autouse=True, scope="module")
def _collect_plugin_classes() -> Iterator[None]:
    """Classes of removed fake plugins stay in their bases' ``__subclasses__()`` until collected,
    where jsonargparse's subclass walk would trip on their vanished modules."""
    yield
    gc.collect()


@pytest.fixture(autouse=True)
def _autoload_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_ENV, raising=False)


@pytest.fixture
def only_vp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the sde built-in table exactly ``{vp}`` (other built-ins are not under test here)."""
    monkeypatch.setattr(SDES, "_builtins", {"vp": "diffkit.sdes.vp:VPSDE"})
