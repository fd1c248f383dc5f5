"""The registry: lazy plugins, fault isolation, conflicts, suggestions, full paths."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from diffkit.registry import (
    DISABLE_ENV,
    SAMPLERS,
    SDES,
    AmbiguousNameError,
    BrokenEntryError,
    PluginShadowWarning,
    Registry,
    UnknownNameError,
    WrongKindError,
    plugin_distributions,
)
from diffkit.sdes.base import LinearSDE
from diffkit.sdes.vp import VPSDE


def _entry(registry: Registry, name: str, source: str | None = None):
    found = [e for e in registry.entries() if e.name == name]
    if source is not None:
        found = [e for e in found if e.source == source]
    assert len(found) == 1, found
    return found[0]


def test_import_diffkit_and_registry_import_no_torch() -> None:
    code = (
        "import sys, diffkit, diffkit.registry as r; r.SDES.names(); r.SDES.entries(); "
        "r.plugin_distributions(); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'jsonargparse' not in sys.modules, 'jsonargparse imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_plugin_is_imported_only_on_use(fake_plugin, plugin_sdes) -> None:
    fake_plugin(
        "fakeplug",
        {"diffkit.sdes": {"fake_sub": "fakeplug.sdes:SubVP"}},
        modules={"fakeplug.sdes": plugin_sdes},
    )
    assert "fake_sub" in SDES.names()
    entry = _entry(SDES, "fake_sub")
    assert (entry.target, entry.source, entry.status) == (
        "fakeplug.sdes:SubVP",
        "fakeplug==0.1.0",
        "not loaded",
    )
    assert "fakeplug.sdes" not in sys.modules
    cls = SDES.get("fake_sub")
    assert cls.__name__ == "SubVP" and issubclass(cls, LinearSDE)
    assert "fakeplug.sdes" in sys.modules
    assert _entry(SDES, "fake_sub").status == "ok"
    sde = SDES.create("fake_sub", beta_max=7.0)
    assert isinstance(sde, VPSDE) and sde.beta_max == 7.0
    assert ("fakeplug", "0.1.0") in plugin_distributions()


def test_broken_plugin_is_recorded_and_skipped(fake_plugin, plugin_sdes) -> None:
    fake_plugin(
        "fakeplug",
        {"diffkit.sdes": {"fake_good": "fakeplug.sdes:SubVP", "fake_broken": "fakeplug.nope:X"}},
        modules={"fakeplug.sdes": plugin_sdes},
    )
    with pytest.raises(BrokenEntryError) as info:
        SDES.get("fake_broken")
    msg = str(info.value)
    assert "fake_broken" in msg and "fakeplug==0.1.0" in msg
    assert "ModuleNotFoundError" in msg and "fakeplug.nope" in msg
    # other names are unaffected
    assert SDES.get("fake_good").__name__ == "SubVP"
    assert SDES.get("vp") is VPSDE
    broken = _entry(SDES, "fake_broken")
    assert broken.status == "broken" and "ModuleNotFoundError" in broken.error
    failures = SDES.materialize_aliases()
    assert [f.name for f in failures] == ["fake_broken"]
    import diffkit.aliases.sdes as alias_module

    assert issubclass(alias_module.fake_good, VPSDE)
    with pytest.raises(UnknownNameError, match=r"Failed to load: fake_broken \(fakeplug 0.1.0"):
        SDES.get("fake_missing")


def test_not_a_subclass_is_broken(fake_plugin, plugin_sdes) -> None:
    fake_plugin(
        "fakeplug",
        {
            "diffkit.sdes": {
                "fake_notsde": "fakeplug.sdes:NotAnSDE",
                "fake_int": "fakeplug.sdes:make_int",
                "fake_factory": "fakeplug.sdes:make_sub",
            }
        },
        modules={"fakeplug.sdes": plugin_sdes},
    )
    with pytest.raises(WrongKindError, match=r"not a subclass of diffkit\.sdes\.base\.LinearSDE"):
        SDES.get("fake_notsde")
    with pytest.raises(WrongKindError, match="returns <class 'int'>"):
        SDES.get("fake_int")
    assert _entry(SDES, "fake_notsde").status == "broken"
    assert _entry(SDES, "fake_int").status == "broken"
    # a factory annotated with a concrete subclass is fine, and its alias builds that class
    sde = SDES.alias("fake_factory")()
    assert type(sde).__name__ == "SubVP" and sde.beta_max == 5.0
    assert _entry(SDES, "fake_factory").status == "ok"


def test_shadowed_builtin_keeps_its_name(fake_plugin, plugin_sdes) -> None:
    fake_plugin(
        "fakeplug", {"diffkit.sdes": {"vp": "fakeplug.sdes:SubVP"}}, {"fakeplug.sdes": plugin_sdes}
    )
    with pytest.warns(PluginShadowWarning, match=r"fakeplug==0.1.0 registers sde 'vp'"):
        SDES.names()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        SDES.names()
        assert SDES.get("vp") is VPSDE
    shadowed = _entry(SDES, "vp", source="fakeplug==0.1.0")
    assert shadowed.status == "shadowed" and "fakeplug.sdes.SubVP" in shadowed.error
    assert _entry(SDES, "vp", source="built-in").status == "ok"
    assert SDES.get("fakeplug.sdes:SubVP").__name__ == "SubVP"
    assert "fakeplug.sdes" in sys.modules  # only through the full path


def test_ambiguous_name_lists_both_distributions(fake_plugin, plugin_sdes) -> None:
    fake_plugin(
        "fakeplug-a",
        {"diffkit.sdes": {"fake_amb": "fakea.sdes:SubVP"}},
        {"fakea.sdes": plugin_sdes},
    )
    fake_plugin(
        "fakeplug-b",
        {"diffkit.sdes": {"fake_amb": "fakeb.sdes:SubVP"}},
        {"fakeb.sdes": plugin_sdes},
        version="0.2.0",
    )
    with pytest.raises(AmbiguousNameError) as info:
        SDES.get("fake_amb")
    msg = str(info.value)
    assert "fakeplug-a==0.1.0 -> fakea.sdes:SubVP" in msg
    assert "fakeplug-b==0.2.0 -> fakeb.sdes:SubVP" in msg
    assert "full class path" in msg
    assert "fake_amb" not in SDES.names()
    statuses = {e.source: e.status for e in SDES.entries() if e.name == "fake_amb"}
    assert statuses == {"fakeplug-a==0.1.0": "ambiguous", "fakeplug-b==0.2.0": "ambiguous"}
    assert SDES.get("fakeb.sdes.SubVP").__module__ == "fakeb.sdes"
    assert "fakea.sdes" not in sys.modules


def test_unknown_name_message(fake_plugin, plugin_sdes) -> None:
    registry = Registry(
        "sde",
        "diffkit.sdes.base:LinearSDE",
        group="diffkit_tests.sdes",
        builtins={n: f"nowhere.{n}:X" for n in ("vp", "ve", "cld", "blur")},
    )
    fake_plugin(
        "fake-example",
        {"diffkit_tests.sdes": {"subvp": "fakeplug.sdes:SubVP"}},
        {"fakeplug.sdes": plugin_sdes},
    )
    with pytest.raises(UnknownNameError) as info:
        registry.get("vpp")
    assert str(info.value) == (
        "Unknown sde 'vpp'. Did you mean 'vp'? Available: blur, cld, ve, vp (built-in); subvp "
        "(fake-example 0.1.0). A full class path also works; see 'diffkit list sde'."
    )
    assert isinstance(info.value, LookupError)
    with pytest.raises(UnknownNameError, match=r"Did you mean 'vp'\?"):
        registry.get("VP")  # case-folded
    with pytest.raises(UnknownNameError, match=r"Did you mean 'subvp'\?"):
        registry.get("sub_vp")
    with pytest.raises(UnknownNameError, match=r"Unknown sde 'zzz'\. Available"):
        registry.get("zzz")  # nothing close: no suggestion


def test_disable_switch(fake_plugin, plugin_sdes, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_plugin(
        "fakeplug",
        {"diffkit.sdes": {"fake_sub": "fakeplug.sdes:SubVP"}},
        {"fakeplug.sdes": plugin_sdes},
    )
    monkeypatch.setenv(DISABLE_ENV, "1")
    assert "fake_sub" not in SDES.names()
    assert plugin_distributions() == []
    with pytest.raises(UnknownNameError, match="Plugins are off: DIFFKIT_DISABLE_PLUGIN_AUTOLOAD"):
        SDES.get("fake_sub")
    assert SDES.get("fakeplug.sdes:SubVP").__name__ == "SubVP"  # full paths still work
    assert SDES.get("vp") is VPSDE
    monkeypatch.delenv(DISABLE_ENV)
    assert "fake_sub" in SDES.names()


def test_full_class_paths() -> None:
    assert SDES.get("diffkit.sdes.vp:VPSDE") is VPSDE
    assert SDES.get("diffkit.sdes.vp.VPSDE") is VPSDE
    assert issubclass(SDES.get("diffkit.aliases.sdes.vp"), VPSDE)
    with pytest.raises(UnknownNameError, match=r"Cannot import sde 'diffkit\.sdes\.vp:Nope'"):
        SDES.get("diffkit.sdes.vp:Nope")
    with pytest.raises(UnknownNameError, match=r"Cannot import sde 'nowhere_pkg\.mod\.X'"):
        SDES.get("nowhere_pkg.mod.X")
    with pytest.raises(WrongKindError, match="not a subclass"):
        SDES.get("collections:OrderedDict")
    with pytest.raises(WrongKindError, match="abstract"):
        SDES.get("diffkit.sdes.base:LinearSDE")


class TinySDE(VPSDE):
    """A test-local SDE."""


class FancyTinySDE(VPSDE):
    """A test-local SDE registered under its default name."""


class AbstractSampler(SAMPLERS.base_type):
    """Still abstract (no ``run``)."""


def test_register_duplicates_and_scope() -> None:
    with SDES.scoped():
        SDES.register("tiny_sde")(TinySDE)
        assert SDES.get("tiny_sde") is TinySDE
        assert _entry(SDES, "tiny_sde").source == "in-process"
        with pytest.raises(ValueError, match="pass override=True"):
            SDES.register("tiny_sde")(VPSDE)
        with pytest.raises(ValueError, match="pass override=True"):
            SDES.register("vp")(TinySDE)
        SDES.register("tiny_sde", override=True)(VPSDE)
        assert SDES.get("tiny_sde") is VPSDE
        with pytest.raises(ValueError, match="invalid sde name 'Tiny-SDE'"):
            SDES.register("Tiny-SDE")(TinySDE)
        with pytest.raises(TypeError, match="not a subclass"):
            SDES.register("tiny_int")(int)
        with pytest.raises(TypeError, match="abstract"):
            SAMPLERS.register("tiny_abstract")(AbstractSampler)
        SDES.register()(FancyTinySDE)  # default name: snake case of the class name
        assert SDES.get("fancy_tiny_sde") is FancyTinySDE and "tiny_sde" in SDES.names()
    assert "tiny_sde" not in SDES.names()
    with pytest.raises(UnknownNameError):
        SDES.get("tiny_sde")
