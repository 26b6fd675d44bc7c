"""The diffusers-geo command line: one module per command, each with a ``run``; their options in ``_parsers``.

``--help`` and ``--version`` import argparse and the standard library only; a command's modules (torch,
diffusers, Accelerate, ...) are imported when it runs, after its arguments are checked (``_checks``). A user
error (a bad value, a missing file, an option a scheduler refuses, a model that cannot be loaded) is one line
on stderr, ``diffusers-geo <command>: error: ...``, and exit status 2; ``--debug`` (anywhere on the command
line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType

from ._parsers import COMMANDS as _PARSERS
from ._parsers import UsageError, fail
from ._parsers import build_parser as _build_parser

DESCRIPTION = "diffusers-geo: geometry-aware diffusion samplers for diffusers, compared, evaluated and run."
#: the commands, in the order ``--help`` lists them (modules of this package)
COMMANDS = tuple(_PARSERS)

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]


def _module(name: str) -> ModuleType:
    # imported when used: the checks and each command pull in torch, diffusers, Accelerate, matplotlib, ...
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    """The ``diffusers-geo`` parser (argparse only: building it imports no command)."""
    return _build_parser(DESCRIPTION)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``diffusers-geo`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status, or raises
    :class:`UsageError` (a ``SystemExit`` with status 2) after printing a user error as one line."""
    args, unknown = build_parser().parse_known_args(argv)
    prog = f"diffusers-geo {args.command}"
    if unknown:  # argparse would name the top-level parser; the user typed them for the command
        fail(prog, f"unrecognized arguments: {' '.join(unknown)} (see {prog} --help)")
    try:
        _module("_checks").check(args)
        return _module(args.command).run(args)
    except UsageError:
        raise
    except (
        ValueError,
        TypeError,
        OSError,
    ) as err:  # user errors (bad values, missing files, refused options)
        if args.debug:
            raise
        fail(prog, str(err) or type(err).__name__)
    except SystemExit as err:  # a library's own exit with a message
        if args.debug or not isinstance(err.code, str):
            raise
        fail(prog, err.code.removeprefix(f"{prog}: "))
