import math

import numpy as np
import pytest
import torch

from cellstate.speech.audio import resample
from cellstate.speech.features import FeatureConfig, log_mel, mel_filterbank
from tests.differential import FLOAT64_OTHER_LIBRARY


def _numpy_log_mel(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """The features written out in float64 numpy: frames, window, FFT, filterbank, log, norm."""
    n_fft, hop = config.n_fft, config.hop
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = np.stack(
        [padded[t * hop : t * hop + n_fft] for t in range(1 + len(x) // hop)]
    )  # (T, n_fft)
    n = np.arange(config.window)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / config.window)  # periodic
    left = (n_fft - config.window) // 2
    window = np.zeros(n_fft)
    window[left : left + config.window] = hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (T, K)

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = np.linspace(mel(config.f_min), mel(config.f_max), config.mels + 2)
    hz = 700 * (10 ** (edges / 2595) - 1)
    freqs = np.linspace(0, 8000, n_fft // 2 + 1)
    bank = np.zeros((len(freqs), config.mels))
    for m in range(config.mels):
        lo, mid, hi = hz[m], hz[m + 1], hz[m + 2]
        for k, f in enumerate(freqs):
            if lo < f <= mid:
                bank[k, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                bank[k, m] = (hi - f) / (hi - mid)
    logmel = np.log(power @ bank + 1e-6)
    return (logmel - logmel.mean(0)) / (logmel.std(0) + 1e-5)


def test_log_mel_equals_a_float64_numpy_computation():
    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + t) + 0.05 * rng.standard_normal(len(t))
    config = FeatureConfig()
    expected = _numpy_log_mel(x, config)
    got = log_mel(torch.from_numpy(x), config)  # float64 throughout
    assert got.shape == expected.shape == (51, 40)
    torch.testing.assert_close(got, torch.from_numpy(expected), **FLOAT64_OTHER_LIBRARY)


def test_the_mel_filters_are_triangles_peaking_at_one():
    bank = mel_filterbank(FeatureConfig())
    assert bank.shape == (257, 40)
    assert torch.all(bank >= 0) and torch.all(bank.amax(dim=0) > 0.5)


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="window"):
        FeatureConfig(window=600)
    with pytest.raises(ValueError, match="f_max"):
        FeatureConfig(f_max=9000)
    with pytest.raises(ValueError, match="waveform"):
        log_mel(torch.zeros(0))


def test_resampling_keeps_a_tone_and_the_duration():
    t = torch.arange(22050, dtype=torch.float64) / 22050
    tone = torch.sin(2 * math.pi * 1000 * t)
    out = resample(tone, 22050, 16000)
    assert out.shape == (16000,)
    expected = torch.sin(2 * math.pi * 1000 * torch.arange(16000, dtype=torch.float64) / 16000)
    # Away from the edges (where the signal starts abruptly) the resampled tone is the tone.
    torch.testing.assert_close(out[200:-200], expected[200:-200], rtol=0, atol=2e-3)
