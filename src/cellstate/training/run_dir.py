"""A run directory's life: checked before a run, cleared for a fresh start, its metrics read back
with a torn last line tolerated. Shared by ``cellstate train``, ``lm train``, ``compare`` and
``report``; every problem is a RunDirError naming the path, what was expected and what was found.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path


class RunDirError(ValueError):
    """A run directory, or one of its files, that cannot be used as it is."""


def check_writable(out: str | Path, flag: str = "--out") -> Path:
    """``out`` as a Path, created if missing; RunDirError if it is a file or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{flag} {out}: expected a directory, found a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise RunDirError(f"{flag} {out}: cannot write there ({error.strerror})") from None
    return out


def start_fresh(out: Path, files: Iterable[str]) -> None:
    """Remove ``files`` of an earlier run from ``out``, so that a fresh run's metrics never mix
    with those of a run killed before its first checkpoint (which cannot be resumed)."""
    for name in files:
        (out / name).unlink(missing_ok=True)


def refuse_existing(out: Path, what: str) -> None:
    """RunDirError if ``out`` holds anything: ``what`` would overwrite an earlier one."""
    if out.is_dir() and any(out.iterdir()):
        raise RunDirError(
            f"--out {out} already holds files (an earlier {what}?); choose another --out "
            "or remove it"
        )


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a last line cut short (a crash mid-write) is dropped.
    RunDirError naming the file and line for anything else that is not a JSON object."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise RunDirError(
            f"{path}: expected UTF-8 JSON lines, found binary data ({error.reason})"
        ) from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: a write that did not finish
                break
            raise RunDirError(
                f"{path} line {number}: expected a JSON object, found {line[:40]!r} ({error.msg})"
            ) from None
        if not isinstance(record, dict):
            raise RunDirError(f"{path} line {number}: expected a JSON object, found {line[:40]!r}")
        records.append(record)
    return records


def rewrite_jsonl(path: Path, records: Iterable[dict]) -> None:
    """Replace ``path`` with ``records``, one per line (atomically)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)
