"""A run directory and its life: its files' names, checked before a run, cleared for a fresh
start, JSON written atomically, metrics appended and truncated on a resume, and read back with a
torn last line tolerated. Shared by ``cellstate train``, ``lm train``, ``speech train``,
``compare`` and ``report``; every problem is a RunDirError naming the path, what was expected and
what was found.

A run directory holds:
    config.json    what ran (written at the start, atomically)
    metrics.jsonl  one JSON object a line, one line an evaluation (appended)
    checkpoint.pt  everything a resume needs (training/checkpoint.py writes it atomically)
    result.json    the outcome (written at the end, atomically)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
RESULT = "result.json"
RUN_FILES = (CHECKPOINT, METRICS, RESULT, CONFIG)


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
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically: a crash mid-write leaves the
    previous file (or none), never a torn one."""
    _write_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path):
    """The file's JSON, None if there is no file; RunDirError naming it if it is not JSON."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirError(f"{path}: expected JSON, found something else ({error})") from None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class RunDir:
    """The files of one run directory (see the module docstring), and the ways they are
    written: ``path`` is the directory, ``config``/``metrics``/``checkpoint``/``result`` its
    files' paths.

    Example:
        run = RunDir("runs/a")
        run.start_fresh()
        run.write_json(run.config, {...})
        run.append_metrics({"step": 100, "loss": 0.3})
        run.truncate_metrics(lambda record: record["step"] <= 100)  # on a resume from step 100
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / CONFIG
        self.metrics = self.path / METRICS
        self.checkpoint = self.path / CHECKPOINT
        self.result = self.path / RESULT

    def start_fresh(self) -> None:
        """Create the directory and remove an earlier run's files from it (see start_fresh)."""
        self.path.mkdir(parents=True, exist_ok=True)
        start_fresh(self.path, RUN_FILES)

    def write_json(self, path: Path, data: dict) -> None:
        """``data`` to one of this run's JSON files, atomically."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(path, data)

    def append_metrics(self, record: dict) -> None:
        """One evaluation's line at the end of metrics.jsonl."""
        with self.metrics.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict]:
        """metrics.jsonl's records ([] if there is none yet; see read_jsonl)."""
        return read_jsonl(self.metrics) if self.metrics.is_file() else []

    def truncate_metrics(self, keep: Callable[[dict], bool]) -> None:
        """Keep only the metrics lines that ``keep`` accepts: on a resume, the lines a crashed
        run logged after its last checkpoint go (the resumed run logs them again)."""
        if self.metrics.is_file():
            rewrite_jsonl(self.metrics, [r for r in read_jsonl(self.metrics) if keep(r)])
