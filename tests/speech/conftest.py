import math
import random

import pytest
import torch

from cellstate.speech.audio import write_wav
from cellstate.speech.manifest import write_manifest

# A corpus any machine can make without espeak-ng: each word a tone, 8 kHz (so that reading
# resamples), which a tiny model starts to tell apart within a few steps.
TONES = {"one": 500.0, "two": 1300.0, "three": 2600.0}
RATE = 8000
TINY = ["--hidden", "8", "--layers", "1", "--batch", "4", "--stack", "2", "--lr", "0.03"]
TINY += ["--eval-every", "3", "--checkpoint-every", "3", "--threads", "1", "--no-progress"]


def _utterance(words: list[str], rng: random.Random) -> torch.Tensor:
    pieces = [torch.zeros(int(RATE * 0.05))]
    for word in words:
        t = torch.arange(int(RATE * rng.uniform(0.1, 0.16))) / RATE
        pieces += [0.5 * torch.sin(2 * math.pi * TONES[word] * t), torch.zeros(int(RATE * 0.05))]
    return torch.cat(pieces) + 0.01 * torch.randn(sum(len(p) for p in pieces))


@pytest.fixture(scope="session")
def tone_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tones")
    rng = random.Random(0)
    torch.manual_seed(0)
    (root / "wav").mkdir()
    for split, count in (("train", 24), ("test", 6)):
        rows = []
        for i in range(count):
            words = [rng.choice(list(TONES)) for _ in range(rng.randint(1, 3))]
            name = f"wav/{split}{i}.wav"
            write_wav(root / name, _utterance(words, rng), RATE)
            rows.append((name, " ".join(words), "tone"))
        write_manifest(root / f"{split}.csv", rows)
    return root
