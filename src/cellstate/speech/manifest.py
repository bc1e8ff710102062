"""The manifest: a CSV file listing a corpus's utterances, one per row.

    path,transcript,voice
    wav/000001.wav,three oh seven,en-us+Alex

``path`` is relative to the manifest's folder (or absolute); ``transcript`` is the words spoken,
separated by spaces; ``voice`` (optional column) names the speaker. Any WAV corpus with this
file can be trained on; ``cellstate speech data`` writes DIR/train.csv and DIR/test.csv.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("path", "transcript", "voice")


class ManifestError(ValueError):
    """A manifest that cannot be read: the file, the row and what is wrong."""


@dataclass(frozen=True)
class Utterance:
    path: Path  # absolute
    words: tuple[str, ...]
    voice: str = ""


def read_manifest(path: str | Path) -> list[Utterance]:
    """The utterances a manifest lists (ManifestError for a missing file, a missing column,
    an empty transcript, a listed WAV file that does not exist, or no rows)."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"no manifest at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("path", "transcript") if c not in header]
        if missing:
            raise ManifestError(
                f"{path}: the header must name the columns path,transcript[,voice]; "
                f"missing {', '.join(missing)} in {','.join(header) or 'an empty file'}"
            )
        utterances = []
        for row_number, row in enumerate(reader, start=2):
            where = f"{path}, line {row_number}"
            if None in row or any(row[c] is None for c in ("path", "transcript")):
                raise ManifestError(f"{where}: expected {len(header)} fields, got another count")
            words = tuple(row["transcript"].split())
            if not words:
                raise ManifestError(f"{where}: empty transcript")
            wav = path.parent / row["path"].strip()
            if not wav.is_file():
                raise ManifestError(f"{where}: no audio file {wav}")
            utterances.append(Utterance(wav.absolute(), words, (row.get("voice") or "").strip()))
    if not utterances:
        raise ManifestError(f"{path}: no utterances")
    return utterances


def write_manifest(path: str | Path, rows: list[tuple[str, str, str]]) -> None:
    """Write (path relative to the manifest, transcript, voice) rows under COLUMNS."""
    with Path(path).open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
