"""WAV files in and out, band-limited resampling and additive noise at a chosen SNR.

Waveforms are 1-D float32 tensors in [-1, 1] (N samples).
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

SAMPLE_RATE = 16_000  # every waveform the recogniser sees is resampled to this
_SAMPLE_TYPES = {1: torch.uint8, 2: torch.int16, 4: torch.int32}


class AudioError(ValueError):
    """A file that is not a readable PCM WAV file."""


def read_wav(source: str | Path | bytes) -> tuple[Tensor, int]:
    """A PCM WAV file (path or bytes) -> (waveform (N,) float32 in [-1, 1], sample rate).

    8-, 16-, 24- and 32-bit integer PCM; several channels are averaged. Anything else (float
    or compressed WAV, another format, a truncated file) raises AudioError naming the file.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as f:
            channels, width, rate = f.getnchannels(), f.getsampwidth(), f.getframerate()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError) as error:
        raise AudioError(
            f"{name}: not a PCM WAV file ({error}); convert it, e.g. "
            "sox IN -b 16 -e signed-integer OUT.wav"
        ) from None
    if not frames:
        raise AudioError(f"{name}: no samples")
    if len(frames) % (channels * width):
        raise AudioError(f"{name}: truncated WAV data")
    raw = torch.frombuffer(bytearray(frames), dtype=torch.uint8)
    if width == 3:  # 24-bit little-endian: widen to 32 bits by a zero low byte
        raw = F.pad(raw.view(-1, 3), (1, 0)).reshape(-1)
        width = 4
    if width not in _SAMPLE_TYPES:
        raise AudioError(f"{name}: {8 * width}-bit samples are not supported (8/16/24/32-bit)")
    samples = raw.view(_SAMPLE_TYPES[width]).float()
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        samples = samples - 128.0
    scale = 2.0 ** (8 * width - 1)
    samples = samples.view(-1, channels).mean(dim=1) / scale  # (N,)
    return samples, rate


def write_wav(path: str | Path, waveform: Tensor, rate: int = SAMPLE_RATE) -> None:
    """Write a mono 16-bit PCM WAV file; samples outside [-1, 1] are clipped."""
    pcm = (waveform.clamp(-1.0, 1.0) * 32767.0).round().to(torch.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.numpy().tobytes())


def resample(waveform: Tensor, rate: int, new_rate: int = SAMPLE_RATE, width: int = 6) -> Tensor:
    """Band-limited resampling by a Hann-windowed sinc (``width`` zero crossings each side),
    the method of torchaudio's default ``sinc_interp_hann``; (N,) -> (ceil(N new/rate),)."""
    if rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive; got {rate} -> {new_rate}")
    if rate == new_rate:
        return waveform
    g = math.gcd(rate, new_rate)
    up, down = new_rate // g, rate // g  # each block of `down` inputs gives `up` outputs
    cutoff = min(up, down) * 0.99  # in units of the block rate, just under Nyquist
    reach = math.ceil(width * down / cutoff)
    taps = torch.arange(-reach, reach + down, dtype=torch.float64) / down  # (K,)
    t = (-torch.arange(up, dtype=torch.float64)[:, None] / up + taps[None]) * cutoff  # (up, K)
    t = t.clamp(-width, width)
    window = torch.cos(t * math.pi / width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * window * cutoff / down).to(waveform.dtype)  # (up, K)
    x = F.pad(waveform[None, None], (reach, reach + down))  # (1, 1, N + K - 1)
    y = F.conv1d(x, kernel[:, None], stride=down)  # (1, up, blocks)
    y = y[0].t().reshape(-1)  # interleave the `up` phases
    return y[: math.ceil(up * len(waveform) / down)]


def add_noise(waveform: Tensor, snr_db: float, generator: torch.Generator) -> Tensor:
    """The waveform plus white Gaussian noise whose power is the waveform's mean power (over
    the whole file) divided by 10^(snr_db/10)."""
    power = waveform.pow(2).mean().clamp_min(1e-12)
    noise = torch.randn(waveform.shape, generator=generator, dtype=waveform.dtype)
    return waveform + noise * torch.sqrt(power / 10 ** (snr_db / 10))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block: per-file audio work is too small to share, and
    two threads on a loaded machine were measured 37x slower (CPU time) than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
