"""``cellstate report RUN_DIR``: one self-contained HTML page for a run directory.

    cellstate report runs/compare-20250101-120000      # -> .../report.html

Learning curves, the comparison, the gradient flow, exploding gradients and clipping, and the
LSTM's gates, computed from the directory's files and checkpoints; images embedded, nothing
loaded from elsewhere. Exit 0, or 2 when RUN_DIR is not a directory, holds no run, or holds a file
that cannot be read (named on one line).
"""

from __future__ import annotations

import argparse

from cellstate.cli.errors import usage_error
from cellstate.report.html import write_report


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write RUN_DIR/report.html: curves, comparison, gradient flow, gates",
        description="Write one self-contained HTML page (images embedded, readable offline) "
        "for a cellstate train or cellstate compare directory.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a cellstate train or cellstate compare directory"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        path = write_report(args.run_dir)
    except (FileNotFoundError, ValueError) as error:  # ValueError: no run, an unreadable file
        return usage_error("report", error)
    print(f"wrote {path}")
    return 0
