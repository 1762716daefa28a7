"""`ntk-ngd` command line. Each subcommand lives in ntk_ngd/commands/NAME.py and exposes
``register(subparsers)``, which adds its parser and sets ``func(args) -> int``.
Bad input (ValueError) is reported as one line on stderr with exit status 2."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import commands as _commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ntk-ngd",
        description="Natural-gradient descent in wide networks: function-space kernels, "
        "isotropy checks, dynamics and figures.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"ntk-ngd {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
