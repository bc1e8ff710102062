"""Log-mel features, computed with torch.

For a waveform x at 16 kHz: frames of ``window`` samples every ``hop`` samples (the signal
reflect-padded by n_fft/2 at both ends, as torch.stft's ``center=True``; zero-padded when
shorter than n_fft/2), each times a periodic Hann window centred in n_fft points; power
spectrum |FFT|^2; a triangular mel filterbank (HTK mel scale, m = 2595 log10(1 + f/700));
log(mel + 1e-6); then per-utterance normalisation: each band minus its mean over the
utterance, divided by its standard deviation (+ 1e-5).

Shapes: N samples, T frames, M mel bands, K = n_fft/2 + 1 frequency bins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from cellstate.speech.audio import SAMPLE_RATE, add_noise, read_wav, resample
from cellstate.validation import fail, integer

LOG_FLOOR = 1e-6
STD_FLOOR = 1e-5


@dataclass(frozen=True)
class FeatureConfig:
    """25 ms windows every 10 ms and 40 mel bands from 20 Hz to 8 kHz by default."""

    n_fft: int = 512
    window: int = 400
    hop: int = 160
    mels: int = 40
    f_min: float = 20.0
    f_max: float = SAMPLE_RATE / 2

    def __post_init__(self) -> None:
        for name in ("n_fft", "window", "hop", "mels"):
            integer(name, getattr(self, name))
        if self.window > self.n_fft:
            fail("window", f"at most n_fft={self.n_fft}", self.window)
        if not 0 <= self.f_min < self.f_max <= SAMPLE_RATE / 2:
            raise ValueError(
                f"need 0 <= f_min < f_max <= {SAMPLE_RATE / 2}; got {self.f_min}, {self.f_max}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(config: FeatureConfig) -> Tensor:
    """(K, M) triangular filters, peak 1, centres equally spaced on the mel scale."""
    bins = torch.linspace(0, SAMPLE_RATE / 2, config.n_fft // 2 + 1, dtype=torch.float64)
    edges = torch.linspace(
        _hz_to_mel(torch.tensor(config.f_min, dtype=torch.float64)).item(),
        _hz_to_mel(torch.tensor(config.f_max, dtype=torch.float64)).item(),
        config.mels + 2,
        dtype=torch.float64,
    )
    hz = _mel_to_hz(edges)  # (M + 2,)
    lower, centre, upper = hz[:-2], hz[1:-1], hz[2:]  # (M,) each
    rising = (bins[:, None] - lower) / (centre - lower)  # (K, M)
    falling = (upper - bins[:, None]) / (upper - centre)  # (K, M)
    return torch.minimum(rising, falling).clamp_min(0.0).float()


def log_mel(waveform: Tensor, config: FeatureConfig = FeatureConfig()) -> Tensor:
    """(N,) waveform at 16 kHz -> (T, M) normalised log-mel features, T = 1 + N // hop."""
    if waveform.dim() != 1 or len(waveform) == 0:
        raise ValueError(f"waveform must be a non-empty (N,) tensor; got {tuple(waveform.shape)}")
    spectrum = torch.stft(
        waveform,
        config.n_fft,
        hop_length=config.hop,
        win_length=config.window,
        window=torch.hann_window(config.window, dtype=waveform.dtype),
        center=True,
        pad_mode="reflect" if len(waveform) > config.n_fft // 2 else "constant",
        return_complex=True,
    )  # (K, T)
    power = spectrum.abs().pow(2).t()  # (T, K)
    features = torch.log(power @ mel_filterbank(config).to(power.dtype) + LOG_FLOOR)  # (T, M)
    mean = features.mean(dim=0, keepdim=True)
    std = features.std(dim=0, unbiased=False, keepdim=True)
    return (features - mean) / (std + STD_FLOOR)


def file_features(
    path,
    config: FeatureConfig = FeatureConfig(),
    snr_db: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A WAV file -> (T, M) features: read, resampled to 16 kHz, optionally white noise at
    ``snr_db`` (drawn from ``generator``) added, then :func:`log_mel`."""
    waveform, rate = read_wav(path)
    waveform = resample(waveform, rate, SAMPLE_RATE)
    if snr_db is not None:
        waveform = add_noise(waveform, snr_db, generator)
    return log_mel(waveform, config)
