"""Vocal separation before the audio encoder, as Hallo, Hallo2 and MEMO do: the MDX-Net model
Kim_Vocal_2.onnx (from Hallo's download) run with onnxruntime, framed as `audio-separator` 0.17
frames it, so a song's instruments do not drive the mouth.

The song is cut into chunks of 256 STFT frames (261,120 samples at 44.1 kHz) that overlap by a
quarter; each chunk's stereo spectrum, cut to the model's 3,072 lowest bins, goes through the model,
which returns the vocals' spectrum; the chunks' waveforms are blended with Hann weights. Chunks
are finished and written out as soon as no later chunk overlaps them, so the working memory does
not grow with the song.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..onnx_runtime import onnx_session
from .resample import resample

SEPARATOR_FOLDER = "audio_separator"
SEPARATOR_FILE = "Kim_Vocal_2.onnx"
MEMO_SEPARATOR_FOLDER = "misc/vocal_separator"  # where MEMO's download keeps the same file


@dataclass(frozen=True)
class MDXParams:
    """One MDX-Net model's framing (Kim_Vocal_2's values from UVR's model data, by file hash)."""

    n_fft: int = 7680
    hop: int = 1024
    dim_f: int = 3072  # frequency bins the model sees; the rest are zero on the way back
    dim_t: int = 256  # STFT frames per chunk
    compensate: float = 1.009  # the model's output level correction
    sample_rate: int = 44100
    overlap: float = 0.25
    peak: float = 0.9  # input and output are scaled down to this peak when louder (never up)
    silenced_bins: int = 3  # the lowest bins of the model's input are zeroed

    @property
    def chunk(self) -> int:
        return self.hop * (self.dim_t - 1)

    @property
    def trim(self) -> int:
        return self.n_fft // 2

    @property
    def step(self) -> int:
        return int((1 - self.overlap) * self.chunk)


KIM_VOCAL_2 = MDXParams()


def find_separator(folders: list[Path]) -> Path | None:
    """Kim_Vocal_2.onnx in <folder>/audio_separator/ (as Hallo's download keeps it), <folder>/misc/vocal_separator/
    (MEMO's) or <folder>/."""
    for folder in folders:
        for candidate in (Path(folder) / SEPARATOR_FOLDER / SEPARATOR_FILE,
                          Path(folder) / MEMO_SEPARATOR_FOLDER / SEPARATOR_FILE, Path(folder) / SEPARATOR_FILE):
            if candidate.is_file():
                return candidate
    return None


class VocalSeparator:
    """Kim_Vocal_2.onnx (or a model with its input and output) on onnxruntime: waveform → vocals."""

    def __init__(self, path: str | Path, params: MDXParams = KIM_VOCAL_2):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"No vocal separation model at {path}: put Kim_Vocal_2.onnx (Hallo's download, "
                f"pretrained_models/audio_separator/Kim_Vocal_2.onnx) in models/emo/{SEPARATOR_FOLDER}/.")
        try:
            self.session = onnx_session(path)
        except ImportError:
            raise
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            raise ValueError(f"Cannot load {path.name} as an ONNX model ({err}); it may be incomplete: download it "
                             "again.") from None
        inputs = self.session.get_inputs()
        expected = [4, params.dim_f, params.dim_t]
        if len(inputs) != 1 or list(inputs[0].shape[1:]) != expected:
            shapes = [tuple(i.shape) for i in inputs]
            raise ValueError(f"{path.name} takes {shapes}; a Kim_Vocal_2-style MDX model takes one input "
                             f"[batch, {', '.join(map(str, expected))}].")
        self.input_name = inputs[0].name
        self.params = params
        self.window = torch.hann_window(params.n_fft, periodic=True)

    def separate(self, waveform: torch.Tensor, sample_rate: int,
                 on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """[C, T] (or [T]) at any rate → the vocals [C, T] at the same rate (mono stays mono; more than
        two channels are mixed down to stereo first). on_chunk(done, total) after every chunk; it may raise
        to stop."""
        p = self.params
        x = waveform.float()
        if x.ndim == 1:
            x = x[None]
        channels = x.shape[0]
        if channels > 2:
            x = x.mean(0, keepdim=True)
        if sample_rate != p.sample_rate:
            x = resample(x, sample_rate, p.sample_rate)
        stereo = x.expand(2, -1) if x.shape[0] == 1 else x
        peak = _peak(stereo)
        gain = p.peak / peak if peak > p.peak else 1.0
        vocals = torch.empty(2, stereo.shape[1])
        for start, piece in self._stream(stereo, gain, on_chunk):
            vocals[:, start: start + piece.shape[1]] = piece
        vocals *= p.compensate
        out_peak = _peak(vocals)
        if out_peak > p.peak:
            vocals *= p.peak / out_peak
        if channels == 1:
            vocals = vocals.mean(0, keepdim=True)
        if sample_rate != p.sample_rate:
            vocals = resample(vocals, p.sample_rate, sample_rate)[:, : waveform.shape[-1]]
        return vocals

    def _stream(self, mix: torch.Tensor, gain: float, on_chunk):
        """Yield (start, samples [2, n]) of the blended model output, in order, each piece final."""
        p = self.params
        n = mix.shape[1]
        gen = p.chunk - 2 * p.trim
        # audio-separator's padding: `trim` zeros in front, and enough behind for whole generations
        length = n + p.trim + gen + p.trim - n % gen
        starts = list(range(0, length, p.step))
        acc = torch.zeros(2, p.chunk)  # from the chunk in work's start: earlier samples are out already
        weights = torch.zeros(p.chunk)
        origin = 0  # the padded position acc[:, 0] stands for
        for k, start in enumerate(starts):
            end = min(start + p.chunk, length)
            segment = self._padded_slice(mix, start - p.trim, end - p.trim) * gain
            y = self._run(torch.nn.functional.pad(segment, (0, p.chunk - segment.shape[1])))[:, : end - start]
            w = torch.from_numpy(np.hanning(end - start).astype(np.float32))
            acc[:, start - origin: end - origin] += y * w
            weights[start - origin: end - origin] += w
            # everything before the next chunk's start is final
            final = (starts[k + 1] if k + 1 < len(starts) else length) - origin
            out = acc[:, :final] / weights[:final].clamp_min(1e-8)
            # keep the song's samples: padded positions trim .. trim + n
            lo, hi = max(origin, p.trim), min(origin + final, p.trim + n)
            if hi > lo:
                yield lo - p.trim, out[:, lo - origin: hi - origin].clone()
            acc = torch.cat([acc[:, final:], torch.zeros(2, final)], dim=1)
            weights = torch.cat([weights[final:], torch.zeros(final)])
            origin += final
            if on_chunk is not None:
                on_chunk(k + 1, len(starts))

    @staticmethod
    def _padded_slice(x: torch.Tensor, a: int, b: int) -> torch.Tensor:
        """x[:, a:b] with zeros where the range falls outside x."""
        lo, hi = max(a, 0), min(b, x.shape[1])
        if hi <= lo:
            return x.new_zeros(x.shape[0], b - a)
        return torch.nn.functional.pad(x[:, lo:hi], (lo - a, b - hi))

    def _run(self, segment: torch.Tensor) -> torch.Tensor:
        """One chunk [2, chunk] → the model's vocals [2, chunk]."""
        p = self.params
        spec = torch.stft(segment, p.n_fft, p.hop, window=self.window, center=True, return_complex=True)
        spec = torch.view_as_real(spec[:, : p.dim_f])  # [2, F, frames, 2]
        x = spec.permute(0, 3, 1, 2).reshape(1, 4, p.dim_f, -1).contiguous()  # L re, L im, R re, R im
        x[:, :, : p.silenced_bins] = 0
        y = torch.from_numpy(self.session.run(None, {self.input_name: x.numpy()})[0])
        y = y.reshape(2, 2, p.dim_f, -1).permute(0, 2, 3, 1).contiguous()
        full = torch.zeros(2, p.n_fft // 2 + 1, y.shape[2], dtype=torch.complex64)
        full[:, : p.dim_f] = torch.view_as_complex(y)
        return torch.istft(full, p.n_fft, p.hop, window=self.window, center=True, length=p.chunk)


def _peak(x: torch.Tensor) -> float:
    """max |x| without a full-size temporary (abs() would copy the whole song)."""
    if not x.numel():
        return 0.0
    low, high = torch.aminmax(x)
    return max(-float(low), float(high))
