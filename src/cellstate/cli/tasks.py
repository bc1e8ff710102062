"""``cellstate tasks``: one line per task: name, length parameter and default, paper figure."""

from __future__ import annotations

from cellstate.tasks import TASKS, make_task

# What `--length` means for each task (T where not listed).
PARAMETER = {"long-lag": "p", "long-lag-distractors": "q"}
# Lengths at which a published figure may exist (the tasks know which ones have one).
PROBE = (50, 100, 200, 500, 1000)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tasks", help="list the tasks: length parameter, default, published figure"
    )
    parser.set_defaults(func=run)


def task_lines() -> list[str]:
    """One line per registered task."""
    lines = []
    for name, cls in TASKS.items():
        if cls.default_length is None:
            length = "no length"
            figures = [(None, make_task(name).paper_sequences)]
        else:
            letter = PARAMETER.get(name, "T")
            length = f"{letter}, default {cls.default_length}"
            figures = [(T, make_task(name, T).paper_sequences) for T in PROBE]
        published = "; ".join(
            f"{n:,}" if T is None else f"{letter}={T}: {n:,}" for T, n in figures if n
        )
        paper = f"paper (sequences) {published}" if published else "no published figure"
        lines.append(f"{name:<21} {length:<15} {cls.summary}  [{paper}]")
    return lines


def run(args) -> int:
    print("\n".join(task_lines()))
    return 0
