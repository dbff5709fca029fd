"""Resampling and mixdown without torchaudio, checked against the signal's own properties."""

import math

import pytest
import torch

from emo_pipeline.audio.resample import prepare_speech, resample, to_mono


def tone(freq, rate, seconds=1.0):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return torch.sin(2 * math.pi * freq * t)


def peak_frequency(x, rate):
    spectrum = torch.fft.rfft(x * torch.hann_window(len(x), dtype=x.dtype))
    return spectrum.abs().argmax().item() * rate / len(x)


def rms(x):
    return x.pow(2).mean().sqrt().item()


def test_downsampling_keeps_frequency_and_amplitude():
    y = resample(tone(440, 44100), 44100, 16000)
    assert y.shape[-1] == 16000
    assert peak_frequency(y, 16000) == pytest.approx(440, abs=2)
    core = y[200:-200]
    assert rms(core) == pytest.approx(1 / math.sqrt(2), rel=0.02)


def db(x):
    return 20 * math.log10(rms(x[600:-600]) * math.sqrt(2))


def test_content_above_the_new_nyquist_is_removed_not_folded():
    assert db(resample(tone(8200, 44100), 44100, 16000)) < -30  # would alias to 7.8 kHz
    assert db(resample(tone(9000, 44100), 44100, 16000)) < -60
    assert abs(db(resample(tone(5000, 44100), 44100, 16000))) < 0.1  # speech band stays flat


def test_upsampling_and_length_formula():
    x = tone(300, 8000, 0.5)
    y = resample(x, 8000, 16000)
    assert y.shape[-1] == 8000
    assert peak_frequency(y, 16000) == pytest.approx(300, abs=3)
    assert resample(torch.zeros(12345), 44100, 16000).shape[-1] == math.ceil(12345 * 16000 / 44100)


def test_identity_and_leading_dims():
    x = torch.randn(2, 1000)
    assert resample(x, 16000, 16000) is x
    assert resample(x, 48000, 16000).shape == (2, 334)


def test_to_mono_averages():
    stereo = torch.stack([torch.ones(100), -torch.ones(100)])
    assert torch.equal(to_mono(stereo), torch.zeros(100))
    assert to_mono(torch.ones(1, 2, 10)).shape == (10,)


def test_errors():
    with pytest.raises(ValueError, match="empty"):
        prepare_speech(torch.zeros(2, 0), 16000)
    with pytest.raises(ValueError, match="batch of 2"):
        prepare_speech(torch.zeros(2, 1, 100), 16000)
    with pytest.raises(ValueError, match="NaN"):
        prepare_speech(torch.tensor([0.0, float("nan")]), 16000)
    with pytest.raises(ValueError, match="sample rate"):
        prepare_speech(torch.zeros(10), 0)
