"""The ``diffkit`` command: routes a subcommand to its implementation, importing it lazily.

``fit | validate | test | predict`` go to :class:`~diffkit.cli.lightning_cli.DiffkitCLI`; the
other subcommands are functions ``(argv) -> exit code`` listed in :data:`SUBCOMMANDS` (adding one
is one line there). A configuration error exits with status 2 and a one-paragraph message, no
traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["LIGHTNING_SUBCOMMANDS", "SUBCOMMANDS", "main"]

#: Subcommand -> ``"module:function"`` taking ``argv`` (the arguments after it), returning a code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("diffkit.cli.list_cmd:list_main", "list registered parts and plugins"),
    "sample": ("diffkit.cli.sample_cmd:sample_main", "sample from a checkpoint"),
    "evaluate": ("diffkit.cli.sample_cmd:evaluate_main", "evaluate metrics of a checkpoint"),
}

#: Subcommands handled by LightningCLI (``diffkit fit -c cfg.yaml ...``).
LIGHTNING_SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model",
    "validate": "run one validation epoch",
    "test": "run one test epoch",
    "predict": "run prediction",
}


def _usage() -> str:
    rows = [(k, v) for k, v in LIGHTNING_SUBCOMMANDS.items()]
    rows += [(k, help_) for k, (_, help_) in SUBCOMMANDS.items()]
    lines = [f"  {name:<10} {help_}" for name, help_ in rows]
    return (
        "usage: diffkit <command> [options]\n\ncommands:\n"
        + "\n".join(lines)
        + "\n\nexample: diffkit fit -c configs/toy/gmm_vp_resnet.yaml\n"
        "'diffkit <command> --help' shows the options of a command.\n"
    )


def _error(message: str) -> int:
    sys.stderr.write(f"diffkit: error: {message}\n")
    return 2


def _run_lightning(argv: list[str] | None) -> int:
    from diffkit.cli.lightning_cli import ConfigError, DiffkitCLI

    try:
        DiffkitCLI(args=argv)  # None: LightningCLI reads sys.argv itself
    except ConfigError as err:
        return _error(str(err))
    return 0


def _run_routed(command: str, argv: list[str]) -> int:
    target, _ = SUBCOMMANDS[command]
    module_name, func_name = target.split(":")
    code = getattr(importlib.import_module(module_name), func_name)(argv)
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffkit`` console script; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        import diffkit

        sys.stdout.write(f"diffkit {diffkit.__version__}\n")
        return 0
    command, rest = args[0], args[1:]
    if command in SUBCOMMANDS:
        return _run_routed(command, rest)
    if command in LIGHTNING_SUBCOMMANDS:
        try:
            return _run_lightning(None if argv is None else [command, *rest])
        except SystemExit as exit_:  # argparse/jsonargparse errors and --help/--print_config
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    import difflib

    known = [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]
    close = difflib.get_close_matches(command, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return _error(f"unknown command '{command}'.{hint} Commands: {', '.join(known)}")
