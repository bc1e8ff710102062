"""How every subcommand reports bad input: one line on stderr, exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2


def usage_error(command: str, error: Exception | str) -> int:
    """Print ``cellstate COMMAND: error: MESSAGE`` on one line to stderr; return USAGE_ERROR."""
    message = " ".join(str(error).split())  # one line, whatever the exception held
    print(f"cellstate {command}: error: {message}", file=sys.stderr)
    return USAGE_ERROR


def print_usage(parser: argparse.ArgumentParser) -> int:
    """A command group called without its subcommand: its help on stderr; return USAGE_ERROR."""
    parser.print_help(sys.stderr)
    return USAGE_ERROR
