import wave

import pytest
import torch

from cellstate.speech.audio import AudioError, add_noise, read_wav, write_wav


def _write(path, frames: bytes, width: int, channels: int = 1, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(frames)


def test_16_bit_round_trip(tmp_path):
    x = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0])
    write_wav(tmp_path / "a.wav", x, 22050)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22050
    torch.testing.assert_close(y, x, rtol=0, atol=1 / 32767)  # one 16-bit quantisation step


def test_8_and_24_bit_and_stereo_are_read(tmp_path):
    _write(tmp_path / "u8.wav", bytes([128, 192, 64]), 1)
    y, _ = read_wav(tmp_path / "u8.wav")
    torch.testing.assert_close(y, torch.tensor([0.0, 0.5, -0.5]))
    # 24-bit little-endian: 0x400000 = 0.5, then -0.5; stereo averages the channels.
    _write(tmp_path / "s24.wav", bytes([0, 0, 0x40, 0, 0, 0xC0]), 3, channels=2)
    y, _ = read_wav(tmp_path / "s24.wav")
    torch.testing.assert_close(y, torch.tensor([0.0]))
    _write(tmp_path / "m24.wav", bytes([0, 0, 0x40, 0, 0, 0xC0]), 3)
    torch.testing.assert_close(read_wav(tmp_path / "m24.wav")[0], torch.tensor([0.5, -0.5]))


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError, match="text.wav: not a PCM WAV file"):
        read_wav(tmp_path / "text.wav")
    _write(tmp_path / "empty.wav", b"", 2)
    with pytest.raises(AudioError, match="empty.wav: no samples"):
        read_wav(tmp_path / "empty.wav")


def test_noise_has_the_requested_snr():
    x = torch.sin(torch.arange(16000) * 0.05)
    noisy = add_noise(x, 10.0, torch.Generator().manual_seed(0))
    snr = 10 * torch.log10(x.pow(2).mean() / (noisy - x).pow(2).mean())
    assert abs(snr.item() - 10.0) < 0.1
