"""SpecAugment-style masking (Park et al. 2019) of a padded feature batch during training:
each utterance gets ``count`` frequency masks of up to ``max_bands`` mel bands and ``count``
time masks of up to ``max_frames`` frames (at most a fifth of the utterance), set to 0, the
mean of the normalised features. Shapes: T frames, B batch, M mel bands."""

from __future__ import annotations

import torch
from torch import Tensor


def spec_augment(
    features: Tensor,
    lengths: Tensor,
    generator: torch.Generator,
    count: int = 2,
    max_bands: int = 6,
    max_frames: int = 10,
) -> Tensor:
    """features (T, B, M), lengths (B,) -> a masked copy (T, B, M); draws from ``generator``."""
    T, B, M = features.shape
    keep = torch.ones(T, B, M, dtype=torch.bool)
    frames = torch.arange(T)[:, None]  # (T, 1)
    bands = torch.arange(M)[None, :]  # (1, M)
    for _ in range(count):
        width = torch.randint(0, max_bands + 1, (B,), generator=generator)  # (B,)
        start = (torch.rand(B, generator=generator) * (M - width + 1)).long()
        for b in range(B):
            keep[:, b] &= ~((bands >= start[b]) & (bands < start[b] + width[b]))
        limit = torch.minimum(torch.full((B,), max_frames), lengths.cpu() // 5)
        width = (torch.rand(B, generator=generator) * (limit + 1)).long()
        start = (torch.rand(B, generator=generator) * (lengths.cpu() - width + 1)).long()
        for b in range(B):
            keep[:, b] &= ~((frames >= start[b]) & (frames < start[b] + width[b]))
    return features * keep.to(features.device)
