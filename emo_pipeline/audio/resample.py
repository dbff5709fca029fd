"""Mono mixdown and band-limited resampling in plain torch (no torchaudio)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _sinc_kernels(orig: int, new: int, zero_crossings: int = 24, rolloff: float = 0.92, beta: float = 14.77,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """One Kaiser-windowed sinc filter per output phase, cutoff a little below the lower Nyquist
    rate: what lies above the new Nyquist rate is removed (over 40 dB down), not folded back, and
    the band up to 75 % of it stays flat."""
    cutoff = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / cutoff)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    phases = -torch.arange(new, dtype=torch.float64)[:, None] / new
    t = ((phases + taps[None]) * cutoff).clamp(-zero_crossings, zero_crossings)
    window = torch.i0(beta * torch.sqrt(1 - (t / zero_crossings) ** 2)) / torch.i0(torch.tensor(beta, dtype=t.dtype))
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    return (sinc * window * (cutoff / orig)).to(dtype), width


def resample(waveform: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last axis; output length ceil(T · new / orig)."""
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"Sample rates must be positive, got {orig_sr} and {new_sr}.")
    if orig_sr == new_sr:
        return waveform
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    shape = waveform.shape
    x = waveform.reshape(-1, 1, shape[-1])
    dtype = x.dtype if x.is_floating_point() else torch.float32
    kernels, width = _sinc_kernels(orig, new, dtype=dtype)
    x = F.pad(x.to(dtype), (width, width + orig))
    y = F.conv1d(x, kernels.to(x.device)[:, None], stride=orig)  # [N, new, blocks]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    length = math.ceil(new * shape[-1] / orig)
    return y[:, :length].reshape(*shape[:-1], length)


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """[T], [C, T] or [1, C, T] → [T] float32, averaging the channels (a sum would clip)."""
    if waveform.ndim == 3:
        if waveform.shape[0] != 1:
            raise ValueError(
                f"Got an audio batch of {waveform.shape[0]} clips; one clip is supported. "
                "Pick one clip first (for example with a batch-split node)."
            )
        waveform = waveform[0]
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2:
        raise ValueError(f"Audio must be [T], [C, T] or [1, C, T]; got shape {tuple(waveform.shape)}.")
    return waveform.float().mean(dim=0)


def prepare_speech(waveform: torch.Tensor, sample_rate: int, target_sr: int = 16000) -> torch.Tensor:
    """Any layout, channel count and rate → mono float32 at `target_sr`."""
    if sample_rate <= 0:
        raise ValueError(f"Invalid sample rate {sample_rate}.")
    mono = to_mono(waveform)
    if mono.numel() == 0:
        raise ValueError("The audio is empty (0 samples).")
    if not torch.isfinite(mono).all():
        raise ValueError("The audio contains NaN or infinite samples.")
    return resample(mono, int(sample_rate), target_sr)
