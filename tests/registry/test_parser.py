"""The CLI parser turns jsonargparse's unresolved-name errors into the registry's message."""

from __future__ import annotations

from argparse import ArgumentError

import pytest
import torch

from diffkit.cli.parser import DiffkitArgumentParser, ShortNameArgumentParser
from diffkit.registry import SDES, materialize_all
from diffkit.sdes.base import LinearSDE

PREFIX = "Unknown sde 'vpp'. Did you mean 'vp'? Available: "
SUFFIX = "A full class path also works; see 'diffkit list sde'."


class Model(torch.nn.Module):
    """A stand-in module with an SDE argument (subclass mode, like LightningCLI's model)."""

    def __init__(self, sde: LinearSDE, lr: float = 1e-3) -> None:
        super().__init__()


def test_flat_key_error_text() -> None:
    materialize_all(["sde"])
    parser = ShortNameArgumentParser(exit_on_error=False)
    parser.add_argument("--sde", type=LinearSDE)
    with pytest.raises(ArgumentError) as info:
        parser.parse_args(["--sde=vpp"])
    text = str(info.value)
    assert text.startswith('Parser key "sde": ' + PREFIX), text
    assert text.endswith(SUFFIX) and "\n" not in text
    assert "vp (built-in)" in text or "vp," in text


@pytest.mark.parametrize("parser_class", [ShortNameArgumentParser, DiffkitArgumentParser])
def test_nested_key_error_text(parser_class) -> None:
    materialize_all(["sde"])
    parser = parser_class(exit_on_error=False)
    parser.add_subclass_arguments(Model, "model")
    args = [f"--model={Model.__module__}.Model", "--model.sde=vpp"]
    with pytest.raises(ArgumentError) as info:
        parser.parse_args(args)
    text = str(info.value)
    assert text.startswith('Parser key "model.sde": ' + PREFIX), text
    assert text.endswith(SUFFIX)
    # a valid short name with init args still parses
    cfg = parser.parse_args([f"--model={Model.__module__}.Model", "--model.sde=vp"])
    assert cfg.model.init_args.sde.class_path == "diffkit.aliases.sdes.vp"


def test_user_error_exits_2_without_traceback(capsys) -> None:
    materialize_all(["sde"])
    parser = DiffkitArgumentParser(prog="diffkit fit")
    parser.add_argument("--sde", type=LinearSDE)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--sde=vpp"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert 'error: Parser key "sde": ' + PREFIX in err
    assert "Traceback" not in err


def test_other_errors_untouched() -> None:
    parser = ShortNameArgumentParser(exit_on_error=False)
    parser.add_argument("--sde", type=LinearSDE)
    with pytest.raises(ArgumentError) as info:
        parser.parse_args(["--sde=diffkit.sdes.vp.NoSuchSDE"])
    assert "Unknown sde" not in str(info.value)
    assert "NoSuchSDE" in str(info.value)


def test_registered_but_broken_name_reports_the_failure(fake_plugin, plugin_sdes) -> None:
    fake_plugin("fakeplug", {"diffkit.sdes": {"fake_broken": "fakeplug.nope:X"}})
    materialize_all(["sde"])
    parser = ShortNameArgumentParser(exit_on_error=False)
    parser.add_argument("--sde", type=LinearSDE)
    with pytest.raises(ArgumentError, match=r"sde 'fake_broken' \(fakeplug==0.1.0 -> fakeplug"):
        parser.parse_args(["--sde=fake_broken"])
    assert "fake_broken" in [f.name for f in SDES.failures()]
