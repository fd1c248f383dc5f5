"""``diffkit list``: columns, JSON records, ``--check`` exit codes, and a listing that imports
neither torch nor any plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

from diffkit.cli.list_cmd import list_main
from diffkit.registry import DISABLE_ENV, PluginShadowWarning
from diffkit.sdes.vp import VPSDE
from diffkit.testing.plugins import remove_distribution


def _json(capsys, argv: list[str]) -> tuple[int, list[dict]]:
    code = list_main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_json_records(fake_plugin, plugin_sdes, capsys) -> None:
    fake_plugin(
        "fakeplug",
        {
            "diffkit.sdes": {"fake_sub": "fakeplug.sdes:SubVP"},
            "diffkit.samplers": {"fake_smp": "fakeplug.nope:X"},
        },
        {"fakeplug.sdes": plugin_sdes},
    )
    code, records = _json(capsys, [])
    assert code == 0
    for rec in records:
        assert {"kind", "name", "target", "source", "status", "error"} <= set(rec)
    by_name = {(r["kind"], r["name"]): r for r in records}
    assert by_name["sde", "vp"] == {
        "kind": "sde",
        "name": "vp",
        "target": "diffkit.sdes.vp:VPSDE",
        "source": "built-in",
        "status": "ok",
        "error": None,
    }
    assert by_name["sde", "fake_sub"]["source"] == "fakeplug==0.1.0"
    assert by_name["sde", "fake_sub"]["status"] == "not loaded"
    # a missing module is found without importing anything
    assert by_name["sampler", "fake_smp"]["status"] == "broken"
    assert "No module named 'fakeplug.nope'" in by_name["sampler", "fake_smp"]["error"]
    assert "fakeplug.sdes" not in sys.modules
    # one kind, by singular or plural name; --load imports and describes
    code, records = _json(capsys, ["sdes", "--load"])
    assert code == 0 and {r["kind"] for r in records} == {"sde"}
    rec = next(r for r in records if r["name"] == "fake_sub")
    assert rec["status"] == "ok" and rec["summary"].startswith("A plugin SDE")
    assert rec["signature"].startswith("(beta_min")
    code, records = _json(capsys, ["sampler", "--load"])
    rec = next(r for r in records if r["name"] == "fake_smp")
    assert rec["status"] == "broken" and "ModuleNotFoundError" in rec["error"]


def test_table_columns(capsys, only_vp, monkeypatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "1")  # installed plugins are not under test here
    assert list_main(["sde"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "TARGET", "SOURCE", "STATUS"]
    assert lines[1].split() == ["sde", "vp", "diffkit.sdes.vp:VPSDE", "built-in", "ok"]


def test_unknown_kind_is_a_usage_error(capsys) -> None:
    assert list_main(["sdex"]) == 2
    assert "unknown kind 'sdex'. Did you mean 'sde'" in capsys.readouterr().err


def test_check_exit_codes(fake_plugin, plugin_sdes, capsys, only_vp) -> None:
    assert list_main(["sde", "--check"]) == 0
    capsys.readouterr()
    cases = {
        "broken": {"fake_bad": "fakeplug.nope:X"},
        "wrong kind": {"fake_bad": "fakeplug.sdes:NotAnSDE"},
        "shadowed": {"vp": "fakeplug.sdes:SubVP"},
    }
    for i, (what, entries) in enumerate(cases.items()):
        root = fake_plugin(
            f"fakeplug{i}", {"diffkit.sdes": entries}, {"fakeplug.sdes": plugin_sdes}
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PluginShadowWarning)
            assert list_main(["sde", "--check"]) == 1, what
        err = capsys.readouterr().err
        assert f"fakeplug{i}==0.1.0" in err, (what, err)
        remove_distribution(root, collect=False)
    fake_plugin(
        "fakeplug-a", {"diffkit.sdes": {"fake_amb": "fa.sdes:SubVP"}}, {"fa.sdes": plugin_sdes}
    )
    fake_plugin(
        "fakeplug-b", {"diffkit.sdes": {"fake_amb": "fb.sdes:SubVP"}}, {"fb.sdes": plugin_sdes}
    )
    assert list_main(["sde", "--check"]) == 1
    assert "is ambiguous" in capsys.readouterr().err


def test_listing_imports_neither_torch_nor_plugins(fake_plugin, plugin_sdes) -> None:
    root = fake_plugin(
        "fakeplug",
        {"diffkit.sdes": {"fake_sub": "fakeplug.sdes:SubVP"}},
        {"fakeplug.sdes": plugin_sdes},
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    code = (
        "import sys\n"
        "from diffkit.cli.list_cmd import list_main\n"
        "assert list_main([]) == 0\n"
        "assert list_main(['--json']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert not [m for m in sys.modules if m.startswith('fakeplug')], 'plugin imported'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "fake_sub" in out.stdout and "fakeplug==0.1.0" in out.stdout
    # and as a module
    out = subprocess.run(
        [sys.executable, "-m", "diffkit.cli.list_cmd", "sde", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    names = {r["name"]: r for r in json.loads(out.stdout)}
    assert names["fake_sub"]["source"] == "fakeplug==0.1.0"


class TinyListed(VPSDE):
    """Docstring (overridden by the registered description)."""


def test_through_the_diffkit_command(capsys, only_vp, monkeypatch) -> None:
    from diffkit.cli.main import main
    from diffkit.registry import SDES

    monkeypatch.setenv(DISABLE_ENV, "1")
    with SDES.scoped():
        SDES.register("tiny_listed", description="A registered test SDE.")(TinyListed)
        assert main(["list", "sde", "--json", "--load"]) == 0
        records = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert records["tiny_listed"]["source"] == "in-process"
    assert records["tiny_listed"]["summary"] == "A registered test SDE."
    assert records["vp"]["status"] == "ok" and records["vp"]["signature"].startswith("(")


def test_plain_listing_shows_a_broken_plugin_without_importing_it(
    fake_plugin, plugin_sdes, capsys, only_vp
) -> None:
    """A missing module, a missing class and a syntax error are found from the source alone;
    a module that fails only when run stays 'not loaded' until --load imports it."""
    fake_plugin(
        "fakeplug",
        {
            "diffkit.sdes": {
                "fake_ok": "fakeplug.sdes:SubVP",
                "fake_nomod": "fakeplug.nope:SubVP",
                "fake_noattr": "fakeplug.sdes:Missing",
                "fake_syntax": "fakeplug.syntax:SubVP",
                "fake_raises": "fakeplug.raises:SubVP",
            }
        },
        {
            "fakeplug.sdes": plugin_sdes,
            "fakeplug.syntax": "class SubVP(:\n",
            "fakeplug.raises": "raise RuntimeError('broken at import')\nSubVP = None\n",
        },
    )
    code, records = _json(capsys, ["sde"])
    assert code == 0
    by_name = {r["name"]: r for r in records}
    assert by_name["fake_ok"]["status"] == "not loaded"
    assert by_name["fake_nomod"]["status"] == "broken"
    assert "No module named 'fakeplug.nope'" in by_name["fake_nomod"]["error"]
    assert by_name["fake_noattr"]["status"] == "broken"
    assert "has no attribute 'Missing'" in by_name["fake_noattr"]["error"]
    assert by_name["fake_syntax"]["status"] == "broken"
    assert "SyntaxError" in by_name["fake_syntax"]["error"]
    assert by_name["fake_raises"]["status"] == "not loaded"
    assert not [m for m in sys.modules if m.startswith("fakeplug")]
    assert list_main(["sde"]) == 0
    table = capsys.readouterr().out
    assert "broken" in table and "diffkit list --load" in table
    code, records = _json(capsys, ["sde", "--load"])
    assert {r["name"]: r["status"] for r in records}["fake_raises"] == "broken"


def test_check_names_why_an_invalid_name_is_broken(fake_plugin, plugin_sdes, capsys) -> None:
    fake_plugin(
        "fakeplug",
        {"diffkit.sdes": {"Bad-Name": "fakeplug.sdes:SubVP"}},
        {"fakeplug.sdes": plugin_sdes},
    )
    assert list_main(["sde", "--check"]) == 1
    err = capsys.readouterr().err
    assert "'Bad-Name'" in err and "invalid name" in err and ": None" not in err
