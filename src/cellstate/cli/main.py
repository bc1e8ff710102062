"""The ``cellstate`` command. Each subcommand is a module of this package that defines
``register(subparsers)``: it adds its parser and sets ``func`` (args -> exit code)."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys

import cellstate.cli as cli_package
from cellstate.kernels.cpu.build import BuildInterrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellstate", description="cellstate: LSTM library and long-memory lab"
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_package.__path__), key=lambda m: m.name):
        if info.name == "main":
            continue
        module = importlib.import_module(f"{cli_package.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(subparsers)
    return parser


def _version() -> str:
    import cellstate

    return f"cellstate {cellstate.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BuildInterrupted as stop:  # Ctrl-C while compiling: stop, in one line
        print(f"cellstate: {stop}; nothing was run", file=sys.stderr)
        return 128 + signal.Signals[stop.signal_name].value


if __name__ == "__main__":
    sys.exit(main())
