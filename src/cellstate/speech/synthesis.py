"""A connected-digit corpus synthesised with espeak-ng, split by voice.

Each utterance is 1-7 random digits spoken as words ("zero" and "oh" both stand for 0) by one
voice: an English accent of espeak-ng with one of its voice variants, at a random speed, pitch
and gap between words. A fraction of the training utterances get white noise at a random SNR.
The variants are split: those of the test set are never heard in training (with any accent).
Everything random is drawn from ``seed`` up front, so a seed gives the same corpus.

    synthesise("data/digits", utterances=5000, seed=0)
    # data/digits/{train,test}.csv, data/digits/wav/{train,test}/*.wav (16 kHz), data.json
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from cellstate.speech.audio import (
    SAMPLE_RATE,
    add_noise,
    one_thread,
    read_wav,
    resample,
    write_wav,
)
from cellstate.speech.manifest import write_manifest

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
TEST_VARIANT_FRACTION = 0.2
TEST_FRACTION = 0.15  # of the utterances
NOISY_FRACTION = 0.3  # of the training utterances
SNR_DB = (5.0, 30.0)
WORDS_PER_MINUTE = (130, 210)
PITCH = (25, 75)  # espeak-ng's 0-99 scale
WORD_GAP = (0, 6)  # in 10 ms units
DEFAULT_UTTERANCES = 5000
INSTALL_HINT = (
    "espeak-ng is not installed (it synthesises the speech); install it with "
    "'sudo apt-get install espeak-ng' (Debian/Ubuntu) or 'brew install espeak-ng' (macOS); "
    "'make test' installs it as root where apt-get is available"
)


class EspeakMissing(RuntimeError):
    """espeak-ng is not on PATH."""


@dataclass(frozen=True)
class Spoken:
    """One utterance to synthesise: its file, words and how it is spoken."""

    split: str
    name: str
    words: tuple[str, ...]
    accent: str
    variant: str
    speed: int
    pitch: int
    gap: int
    snr_db: float | None

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


def espeak() -> str:
    """The espeak-ng executable (EspeakMissing with how to install it if there is none)."""
    path = shutil.which("espeak-ng")
    if path is None:
        raise EspeakMissing(INSTALL_HINT)
    return path


def variants(executable: str) -> list[str]:
    """espeak-ng's voice variants (the names after '+'), whispering ones left out: digits are
    not whispered in the classic corpora, and a whisper has no pitch to learn from."""
    listing = subprocess.run(
        [executable, "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = [line.split()[4].split("/")[-1] for line in listing.splitlines()[1:] if line.split()]
    return sorted(n for n in set(names) if "whisper" not in n.lower())


def plan(utterances: int, seed: int, all_variants: list[str]) -> list[Spoken]:
    """The corpus to synthesise, drawn from ``seed``: test utterances use only test variants."""
    if utterances < 2:
        raise ValueError(
            f"utterances must be at least 2 (a train and a test one); got {utterances}"
        )
    rng = random.Random(seed)
    shuffled = rng.sample(all_variants, len(all_variants))
    held_out = max(1, round(TEST_VARIANT_FRACTION * len(shuffled)))
    pools = {"test": sorted(shuffled[:held_out]), "train": sorted(shuffled[held_out:])}
    n_test = max(1, round(TEST_FRACTION * utterances))
    spoken = []
    for i in range(utterances):
        split = "test" if i < n_test else "train"
        digits = [rng.randrange(10) for _ in range(rng.randint(1, 7))]
        words = tuple(rng.choice(("zero", "oh")) if d == 0 else DIGITS[d] for d in digits)
        noisy = split == "train" and rng.random() < NOISY_FRACTION
        spoken.append(
            Spoken(
                split,
                f"{i:06d}",
                words,
                rng.choice(ACCENTS),
                rng.choice(pools[split]),
                rng.randint(*WORDS_PER_MINUTE),
                rng.randint(*PITCH),
                rng.randint(*WORD_GAP),
                round(rng.uniform(*SNR_DB), 1) if noisy else None,
            )
        )
    return spoken


def _synthesise_one(executable: str, item: Spoken, out: Path, seed: int) -> None:
    command = [executable, "-v", item.voice, "-s", str(item.speed), "-p", str(item.pitch)]
    command += ["-g", str(item.gap), "--stdout", " ".join(item.words)]
    run = subprocess.run(command, capture_output=True, check=False)
    if run.returncode != 0 or not run.stdout:
        error = run.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"espeak-ng failed for voice {item.voice}: {error or 'no audio'}")
    waveform, rate = read_wav(run.stdout)
    waveform = resample(waveform, rate, SAMPLE_RATE)
    if item.snr_db is not None:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + int(item.name))
        waveform = add_noise(waveform, item.snr_db, generator)
    write_wav(out / "wav" / item.split / f"{item.name}.wav", waveform)


def synthesise(
    out: str | Path,
    utterances: int = DEFAULT_UTTERANCES,
    seed: int = 0,
    workers: int | None = None,
    progress: bool | None = None,
) -> dict:
    """Write the corpus to ``out`` (see the module docstring) and return what data.json holds.

    ``out`` must not hold a corpus already. ``workers``: espeak-ng processes at once (default:
    the CPU count). ``progress``: a tqdm bar (None: only on a terminal).
    """
    executable = espeak()
    out = Path(out)
    if (out / "train.csv").exists() or (out / "test.csv").exists():
        raise FileExistsError(f"{out} already holds a corpus; choose another --out")
    spoken = plan(utterances, seed, variants(executable))
    for split in ("train", "test"):
        (out / "wav" / split).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    workers = workers or os.cpu_count() or 1
    disable = None if progress is None else not progress
    with (
        one_thread(),
        ThreadPoolExecutor(workers) as pool,
        tqdm(total=len(spoken), unit="utt", disable=disable) as bar,
    ):
        jobs = [pool.submit(_synthesise_one, executable, item, out, seed) for item in spoken]
        for job in jobs:
            job.result()
            bar.update(1)
    seconds = time.perf_counter() - start
    for split in ("train", "test"):
        rows = [
            (f"wav/{s.split}/{s.name}.wav", " ".join(s.words), s.voice)
            for s in spoken
            if s.split == split
        ]
        write_manifest(out / f"{split}.csv", rows)
    version = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout
    info = {
        "utterances": len(spoken),
        "train": sum(s.split == "train" for s in spoken),
        "test": sum(s.split == "test" for s in spoken),
        "seed": seed,
        "seconds": round(seconds, 2),
        "workers": workers,
        "espeak_ng": version.strip(),
        "test_variants": sorted({s.variant for s in spoken if s.split == "test"}),
        "train_variants": sorted({s.variant for s in spoken if s.split == "train"}),
        "spoken": [asdict(s) for s in spoken],
    }
    (out / "data.json").write_text(json.dumps(info, indent=1) + "\n")
    return info
