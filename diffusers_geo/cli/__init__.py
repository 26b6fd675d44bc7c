"""The diffusers-geo command line: one module per command, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from types import ModuleType

from .._help import plain

#: the commands, in the order ``--help`` lists them (modules of this package)
COMMANDS = ("bench", "generate", "gits", "demo", "analyze", "eval")


def _command(name: str) -> ModuleType:
    # imported when used: each command pulls in what it needs (the benchmark, Accelerate, matplotlib, ...)
    return importlib.import_module(f"{__name__}.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffusers-geo", description=plain(__doc__.splitlines()[0]))
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        _command(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _command(args.command).run(args)
