"""Transcribing WAV files with a trained checkpoint (any sample rate: resampled to 16 kHz)."""

from __future__ import annotations

from pathlib import Path

import torch

from cellstate.speech.ctc import Vocabulary, greedy_decode
from cellstate.speech.features import FeatureConfig, file_features
from cellstate.speech.model import SpeechModel


@torch.no_grad()
def transcribe_file(
    model: SpeechModel, vocab: Vocabulary, features: FeatureConfig, path: str | Path
) -> str:
    """The words the model hears in one WAV file (AudioError if it cannot be read)."""
    x = file_features(path, features)  # (T, M)
    device = next(model.parameters()).device
    log_probs, steps = model(x[:, None].to(device), torch.tensor([len(x)]))  # (T', 1, V + 1)
    return " ".join(vocab.decode(greedy_decode(log_probs.cpu(), steps.cpu())[0]))
