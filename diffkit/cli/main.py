"""The ``diffkit`` command: routes a subcommand to its implementation, importing it lazily.

``fit | validate | test | predict`` go to :class:`~diffkit.cli.lightning_cli.DiffkitCLI`; the
other subcommands are functions ``(argv) -> exit code`` listed in :data:`SUBCOMMANDS` (adding one
is one line there). Every command runs through :func:`diffkit.cli.boundary.answer`: a user's
mistake exits with status 2 and one message naming the field, file or value and the fix, without
a traceback (``--traceback`` or ``DIFFKIT_TRACEBACK=1`` shows it); an internal error keeps its
traceback (exit status 1).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from diffkit.cli.boundary import TRACEBACK_FLAG, answer, split_traceback_flag
from diffkit.errors import UserError

__all__ = ["LIGHTNING_SUBCOMMANDS", "SUBCOMMANDS", "main"]

#: Subcommand -> ``"module:function"`` taking ``argv`` (the arguments after it), returning a code.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "list": ("diffkit.cli.list_cmd:list_main", "list registered parts and plugins"),
    "sample": ("diffkit.cli.sample_cmd:sample_main", "sample from a checkpoint"),
    "evaluate": ("diffkit.cli.sample_cmd:evaluate_main", "evaluate metrics of a checkpoint"),
    "schedule": ("diffkit.cli.schedule_cmd:schedule_main", "optimise a sampler's time grid"),
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


def _run_lightning(command: str, rest: list[str], from_sys_argv: bool) -> int:
    from diffkit.cli.input_checks import check_config_files

    check_config_files(rest)
    from diffkit.cli.lightning_cli import DiffkitCLI

    try:
        DiffkitCLI(args=None if from_sys_argv else [command, *rest])  # None: reads sys.argv
    except SystemExit as exit_:  # argparse/jsonargparse errors and --help/--print_config
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return 0


def _run_routed(command: str, argv: list[str]) -> int:
    target, _ = SUBCOMMANDS[command]
    module_name, func_name = target.split(":")
    code = getattr(importlib.import_module(module_name), func_name)(argv)
    return int(code or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``diffkit`` console script; returns the exit code (0 success, 1
    internal error or failed check, 2 a user's mistake)."""
    args, show_traceback = split_traceback_flag(sys.argv[1:] if argv is None else argv)
    if argv is None:  # LightningCLI reads sys.argv itself
        sys.argv[1:] = args
    return answer(
        lambda: _dispatch(args, argv is None, show_traceback), show_traceback=show_traceback
    )


def _dispatch(args: list[str], from_sys_argv: bool, show_traceback: bool) -> int:
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        import diffkit

        sys.stdout.write(f"diffkit {diffkit.__version__}\n")
        return 0
    command, rest = args[0], args[1:]
    if command in SUBCOMMANDS:
        # a routed command answers its own user errors: it gets the switch back
        return _run_routed(command, [*rest, TRACEBACK_FLAG] if show_traceback else rest)
    if command in LIGHTNING_SUBCOMMANDS:
        return _run_lightning(command, rest, from_sys_argv)
    import difflib

    known = [*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS]
    close = difflib.get_close_matches(command, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UserError(f"unknown command '{command}'.{hint} Commands: {', '.join(known)}")
