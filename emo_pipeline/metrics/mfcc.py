"""MFCCs as SyncNet was trained on them: python_speech_features' `mfcc(signal, samplerate)` with its defaults,
which is how syncnet_python's SyncNetInstance.evaluate calls it on 16 kHz mono int16 samples.

Every step follows that library (version 0.6) in float64: pre-emphasis 0.97 on the raw int16 values, frames of
round_half_up(0.025·rate) samples every round_half_up(0.01·rate), the last one zero-padded, no window, power
spectrum |rfft(frame, 512)|²/512, 26 triangular mel filters on floor((nfft+1)·hz/rate) bins, zeros replaced by
float eps before the log, orthonormal DCT-II kept to 13 coefficients, lifter 22, and coefficient 0 replaced by
the log of the frame's total energy. Only the DCT is ours (a float64 matrix product instead of scipy's FFT
route): values agree to about 1e-13 relative, not bit for bit.

`syncnet_mfcc` prepares a waveform as evaluate() does with ffmpeg (`-ac 1 -acodec pcm_s16le -ar 16000`): mono,
16 kHz, int16, then transposes to SyncNet's [13, frames] layout. The mixdown (channel mean) and the resampler
are the pack's own (emo_pipeline.audio.resample), not ffmpeg's, so a file that is not already mono 16 kHz gives
slightly different samples than syncnet_python's; int16 conversion is ffmpeg's (×32768, round to nearest even,
clip to -32768..32767).
"""

from __future__ import annotations

import decimal
import math
from pathlib import Path

import numpy as np
import torch

from ..audio.resample import resample, to_mono

SYNCNET_RATE = 16000
NUMCEP = 13
NFILT = 26
NFFT = 512
PREEMPH = 0.97
CEPLIFTER = 22
WINLEN = 0.025
WINSTEP = 0.01


def _round_half_up(number: float) -> int:
    # the library rounds through Decimal of the float itself: 0.025·rate may sit a hair off .5
    return int(decimal.Decimal(number).quantize(decimal.Decimal("1"), rounding=decimal.ROUND_HALF_UP))


def _hz2mel(hz):
    return 2595 * np.log10(1 + hz / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (mel / 2595.0) - 1)


def mel_filterbank(nfilt: int = NFILT, nfft: int = NFFT, sample_rate: int = SYNCNET_RATE) -> np.ndarray:
    """[nfilt, nfft//2 + 1] triangular filters on whole FFT bins, as python_speech_features' get_filterbanks
    (lowfreq 0, highfreq rate/2)."""
    melpoints = np.linspace(_hz2mel(0), _hz2mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(melpoints) / sample_rate)
    bank = np.zeros([nfilt, nfft // 2 + 1])
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            bank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            bank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return bank


def dct_ortho(n: int, keep: int) -> np.ndarray:
    """[n, keep] matrix of the orthonormal DCT-II (scipy.fftpack.dct(type=2, norm='ortho')), first `keep`
    coefficients."""
    k = np.arange(keep)[None, :]
    i = np.arange(n)[:, None]
    matrix = 2 * np.cos(np.pi * k * (2 * i + 1) / (2 * n))
    scale = np.full(keep, math.sqrt(1 / (2 * n)))
    scale[0] = math.sqrt(1 / (4 * n))
    return matrix * scale[None, :]


def frame_count(n_samples: int, sample_rate: int = SYNCNET_RATE) -> int:
    """How many MFCC frames `mfcc` gives for `n_samples` samples (at least one; a partial last frame counts)."""
    frame_len, step = _round_half_up(WINLEN * sample_rate), _round_half_up(WINSTEP * sample_rate)
    if n_samples <= frame_len:
        return 1
    return 1 + int(math.ceil((1.0 * n_samples - frame_len) / step))


def mfcc(signal: np.ndarray, sample_rate: int = SYNCNET_RATE) -> np.ndarray:
    """[frames, 13] float64 MFCCs of a 1-D signal, equal to python_speech_features.mfcc(signal, sample_rate).

    The signal is taken at its own scale: syncnet_python passes int16 samples (±32768), and the log energies
    depend on that scale, so give int16 values (or floats holding them) to match SyncNet's training."""
    signal = np.asarray(signal)
    if signal.ndim != 1:
        raise ValueError(f"mfcc takes a 1-D signal (mono samples); got shape {signal.shape}.")
    if signal.size == 0:
        raise ValueError("mfcc got an empty signal: there is no sound to analyse.")
    if sample_rate <= 0:
        raise ValueError(f"The sample rate must be positive, got {sample_rate}.")
    # int16 − float64 promotes to float64 before the multiply, as the library's pre-emphasis does
    emphasized = np.append(signal[0], signal[1:] - PREEMPH * signal[:-1]).astype(np.float64)

    frame_len, step = _round_half_up(WINLEN * sample_rate), _round_half_up(WINSTEP * sample_rate)
    count = frame_count(signal.size, sample_rate)
    padded = np.concatenate((emphasized, np.zeros((count - 1) * step + frame_len - signal.size)))
    starts = np.arange(0, count * step, step)
    frames = padded[starts[:, None] + np.arange(frame_len)[None, :]]

    power = 1.0 / NFFT * np.square(np.absolute(np.fft.rfft(frames, NFFT)))
    eps = np.finfo(float).eps
    energy = power.sum(1)
    energy = np.where(energy == 0, eps, energy)  # silence: the library's guard against log(0)
    feat = power @ mel_filterbank(NFILT, NFFT, sample_rate).T
    feat = np.where(feat == 0, eps, feat)

    cepstra = np.log(feat) @ dct_ortho(NFILT, NUMCEP)
    lift = 1 + (CEPLIFTER / 2.0) * np.sin(np.pi * np.arange(NUMCEP) / CEPLIFTER)
    cepstra = lift * cepstra
    cepstra[:, 0] = np.log(energy)
    return cepstra


def to_int16(waveform: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float samples in -1..1 → int16 as ffmpeg's pcm_s16le encoder makes them: ×32768, rounded to the nearest
    (ties to even, as lrintf), clipped to -32768..32767."""
    samples = np.asarray(waveform.detach().cpu().numpy() if isinstance(waveform, torch.Tensor) else waveform,
                         dtype=np.float64)
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


def syncnet_audio(waveform: torch.Tensor | np.ndarray, sample_rate: int) -> np.ndarray:
    """Any waveform ([T] or [C, T] floats in -1..1, at any rate) → the mono 16 kHz int16 samples that
    syncnet_python reads back from ffmpeg's audio.wav (mixdown and resampler are the pack's own)."""
    wave = torch.as_tensor(np.asarray(waveform)) if not isinstance(waveform, torch.Tensor) else waveform
    mono = to_mono(wave)
    mono = resample(mono, int(sample_rate), SYNCNET_RATE)
    return to_int16(mono)


def syncnet_mfcc(audio: str | Path | torch.Tensor | np.ndarray, sample_rate: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """SyncNet's audio input: (MFCCs [13, frames] float64, the int16 samples they were computed from).

    `audio` is a file (decoded by the pack's PyAV reader, its first audio stream; a video's sound too) or a
    waveform with its `sample_rate`. The samples come back as well because evaluate() takes the number of
    scored frames from len(audio) / 640."""
    if isinstance(audio, (str, Path)):
        from ..io.media import load_audio  # PyAV only when a file is read

        waveform, sample_rate = load_audio(audio)
    else:
        if sample_rate is None:
            raise ValueError("syncnet_mfcc needs the sample_rate of a waveform given as an array.")
        waveform = audio
    samples = syncnet_audio(waveform, int(sample_rate))
    return np.ascontiguousarray(mfcc(samples, SYNCNET_RATE).T), samples
