"""Vocal separation (Kim_Vocal_2's MDX framing) against an independent numpy computation, an ideal-mask
model on a synthetic voice and instrument, and flat memory over a 10-minute song."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from emo_pipeline.audio.separation import KIM_VOCAL_2, VocalSeparator
from emo_pipeline.tiny import write_mask_separator

P = KIM_VOCAL_2
RATE = 44100


def numpy_stft(x: np.ndarray) -> np.ndarray:
    """[T] → [bins, frames] complex: periodic Hann, centred frames, reflect padding (as torch.stft)."""
    n = np.arange(P.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / P.n_fft)
    padded = np.pad(x, P.n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - P.n_fft) // P.hop
    return np.stack([np.fft.rfft(padded[f * P.hop: f * P.hop + P.n_fft] * window) for f in range(frames)], axis=1)


def numpy_istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of numpy_stft, cut to `length` samples."""
    n = np.arange(P.n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / P.n_fft)
    frames = spec.shape[1]
    total = P.n_fft + P.hop * (frames - 1)
    out, norm = np.zeros(total), np.zeros(total)
    for f in range(frames):
        out[f * P.hop: f * P.hop + P.n_fft] += np.fft.irfft(spec[:, f], P.n_fft) * window
        norm[f * P.hop: f * P.hop + P.n_fft] += window ** 2
    half = P.n_fft // 2
    return (out / np.where(norm > 1e-10, norm, 1))[half: half + length]


def reference_separation(mix: np.ndarray, model) -> np.ndarray:
    """audio-separator 0.17's MDX path written out plainly: whole-song accumulators, symmetric Hann
    weights per chunk, trim, compensation, peak limits. mix [2, N] at 44.1 kHz."""
    mix = mix.astype(np.float64)
    if np.abs(mix).max() > P.peak:
        mix = mix * P.peak / np.abs(mix).max()
    n, trim, chunk = mix.shape[1], P.n_fft // 2, P.hop * (P.dim_t - 1)
    gen = chunk - 2 * trim
    padded = np.concatenate([np.zeros((2, trim)), mix, np.zeros((2, gen + trim - n % gen))], axis=1)
    length = padded.shape[1]
    result, divider = np.zeros((2, length)), np.zeros((2, length))
    for start in range(0, length, int(0.75 * chunk)):
        end = min(start + chunk, length)
        piece = np.zeros((2, chunk))
        piece[:, : end - start] = padded[:, start:end]
        specs = [numpy_stft(piece[c])[: P.dim_f] for c in range(2)]
        x = np.stack([specs[0].real, specs[0].imag, specs[1].real, specs[1].imag])[None].astype(np.float32)
        x[:, :, :3] = 0
        y = model(x)[0].astype(np.float64)
        bins = P.n_fft // 2 + 1
        waves = []
        for c in range(2):
            full = np.zeros((bins, y.shape[-1]), dtype=complex)
            full[: P.dim_f] = y[2 * c] + 1j * y[2 * c + 1]
            waves.append(numpy_istft(full, chunk))
        weight = np.hanning(end - start)
        result[:, start:end] += np.stack(waves)[:, : end - start] * weight
        divider[:, start:end] += weight
    with np.errstate(invalid="ignore", divide="ignore"):
        vocals = (result / divider)[:, trim: trim + n] * P.compensate
    if np.abs(vocals).max() > P.peak:
        vocals = vocals * P.peak / np.abs(vocals).max()
    return vocals


@pytest.fixture(scope="module")
def random_gain_model(tmp_path_factory):
    gains = np.random.default_rng(3).uniform(0.2, 1.5, (4, P.dim_f)).astype(np.float32)
    order = (2, 3, 0, 1)  # the model swaps left and right: the channel layout must be right both ways
    path = write_mask_separator(tmp_path_factory.mktemp("sep") / "gains.onnx", gains, order)

    def model(x):
        return (x * gains[None, :, :, None])[:, list(order)]

    return path, model


def test_framing_overlap_and_compensation_match_an_independent_computation(random_gain_model):
    path, model = random_gain_model
    rng = np.random.default_rng(0)
    n = 2 * (P.hop * (P.dim_t - 1)) + 12345  # three chunks and a short last one
    mix = (rng.standard_normal((2, n)) * 0.2).astype(np.float32)
    mix[0, 1000] = 1.4  # a peak over 0.9: the input is scaled down first
    ours = VocalSeparator(path).separate(torch.from_numpy(mix), RATE).numpy()
    expected = reference_separation(mix, model)
    assert ours.shape == (2, n)
    error = np.abs(ours - expected).max() / np.abs(expected).max()
    assert error < 1e-4, error


def test_ideal_mask_returns_the_voice(tmp_path):
    """A 'voice' (harmonics between 200 and 1,000 Hz, with a syllable envelope) over an 'instrument'
    (a 55 Hz bass and a 6 kHz shimmer): a model that keeps only the voice's bins gives the voice back
    (times Kim_Vocal_2's 1.009) within 1 % RMS, at the song's own rate, mono in and mono out."""
    seconds, rate = 9.0, 32000
    t = np.arange(int(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    voice = envelope * sum(0.08 * np.sin(2 * np.pi * f * t + f) for f in (220, 440, 660, 880))
    instrument = 0.3 * np.sin(2 * np.pi * 55 * t) + 0.1 * np.sin(2 * np.pi * 6000 * t)
    freqs = np.arange(P.dim_f) * RATE / P.n_fft
    keep = ((freqs > 150) & (freqs < 1200)).astype(np.float32)
    path = write_mask_separator(tmp_path / "ideal.onnx", np.tile(keep, (4, 1)))
    mix = torch.from_numpy((voice + instrument).astype(np.float32))[None]
    out = VocalSeparator(path).separate(mix, rate)
    assert out.shape == mix.shape
    got, want = out[0].numpy() / P.compensate, voice
    inner = slice(rate // 10, -rate // 10)  # the resampler's edges aside
    rms_error = np.sqrt(np.mean((got[inner] - want[inner]) ** 2)) / np.sqrt(np.mean(want[inner] ** 2))
    assert rms_error < 0.01, rms_error
    leak = np.sqrt(np.mean((out[0].numpy() - voice) ** 2))
    assert leak < 0.05 * np.sqrt(np.mean(instrument ** 2))  # the instrument is gone


def test_missing_or_wrong_model_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"models/emo/audio_separator/"):
        VocalSeparator(tmp_path / "Kim_Vocal_2.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(ValueError, match="broken.onnx.*download it again"):
        VocalSeparator(tmp_path / "broken.onnx")
    path = write_mask_separator(tmp_path / "small.onnx", np.ones((4, 100), np.float32))
    with pytest.raises(ValueError, match=r"takes one input \[batch, 4, 3072, 256\]"):
        VocalSeparator(path)


MEMORY_CHILD = r"""
import json, sys
from pathlib import Path
import numpy as np, torch
from emo_pipeline.audio.separation import VocalSeparator
def kib(field):
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
seconds, model = float(sys.argv[1]), sys.argv[2]
separator = VocalSeparator(model)
song = torch.from_numpy((np.random.default_rng(0).standard_normal((2, int(seconds * 44100))) * 0.1).astype(np.float32))
separator.separate(song[:, : 44100 * 10], 44100)  # warm up onnxruntime's and torch's pools
Path("/proc/self/clear_refs").write_text("5")
before = kib("VmRSS")
vocals = separator.separate(song, 44100)
print(json.dumps({"growth_mib": (kib("VmHWM") - before) / 1024, "output_mib": vocals.numel() * 4 / 2**20}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_ten_minutes_are_separated_in_the_memory_of_one_minute(tmp_path):
    path = write_mask_separator(tmp_path / "ones.onnx", np.ones((4, P.dim_f), np.float32))
    runs = {}
    # A fixed mmap threshold keeps glibc from growing its heap with each chunk's freed temporaries (its
    # dynamic threshold otherwise adds about 1 MiB per chunk of fragmentation, 55 MiB from 5 to 10
    # minutes); what is left is what the separator itself holds.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for seconds in (60, 600):
        result = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(seconds), str(path)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[seconds] = json.loads(result.stdout.strip().splitlines()[-1])
    # beyond the output itself (the vocals, 202 MiB for 10 minutes), the work takes the same memory
    work = {s: r["growth_mib"] - r["output_mib"] for s, r in runs.items()}
    assert work[600] <= work[60] + 24, runs


def test_node_through_comfyui_stubs(tmp_path):
    """EMO Separate Vocals as ComfyUI loads it: models/emo/audio_separator/ listed, AUDIO in and out at the
    input's rate and channels, a progress bar per chunk, Cancel honoured, a missing model named."""
    import comfy_stubs

    state = comfy_stubs.install(tmp_path / "models", tmp_path / "output")
    node = comfy_stubs.load_pack().NODE_CLASS_MAPPINGS["EMOSeparateVocals"]()
    audio = {"waveform": torch.rand(1, 2, 48000 * 7) - 0.5, "sample_rate": 48000}
    with pytest.raises(FileNotFoundError, match=r"audio_separator/Kim_Vocal_2.onnx is not in the model folders.*audio_separator"):
        node.separate(audio, "audio_separator/Kim_Vocal_2.onnx")
    write_mask_separator(tmp_path / "models" / "emo" / "audio_separator" / "Kim_Vocal_2.onnx",
                         np.full((4, P.dim_f), 0.5, np.float32))
    assert type(node).INPUT_TYPES()["required"]["model"][0] == ["audio_separator/Kim_Vocal_2.onnx"]
    state.progress.clear()
    (vocals,) = node.separate(audio, "audio_separator/Kim_Vocal_2.onnx")
    assert vocals["sample_rate"] == 48000 and vocals["waveform"].shape == (1, 2, 48000 * 7)
    # a half-gain model: half the (band-limited) input, times 1.009
    inner = slice(48000, -48000)
    ratio = vocals["waveform"][0, :, inner].std() / audio["waveform"][0, :, inner].std()
    assert 0.4 < float(ratio) < 0.55
    n, gen = 44100 * 7, P.chunk - 2 * P.trim  # at 44.1 kHz, padded as audio-separator pads
    chunks = -(-(n + P.trim + gen + P.trim - n % gen) // P.step)
    assert chunks == 3 and [p[0] for p in state.progress] == [1, 2, 3] and state.progress[-1][1] == 3
    state.interrupted = True
    with pytest.raises(comfy_stubs.InterruptProcessingException):
        node.separate(audio, "audio_separator/Kim_Vocal_2.onnx")
    state.interrupted = False


def test_cli_separates_the_voice_for_the_features_and_keeps_the_song(tmp_path, capsys, monkeypatch):
    from emo_pipeline import cli
    from emo_pipeline.io.media import read_video_info, write_video
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.tiny import write_tiny_model_folder

    song = tmp_path / "song.mp4"  # a sound track at 44.1 kHz stereo
    write_video(song, torch.rand(25, 16, 16, 3), 25, audio=((torch.rand(2, 44100) - 0.5) * 0.5, 44100))
    models = tmp_path / "models"
    write_tiny_model_folder(models)  # models/tiny/net.safetensors, models/vae/, models/wav2vec/
    write_mask_separator(models / "audio_separator" / "Kim_Vocal_2.onnx",
                         np.zeros((4, P.dim_f), np.float32))  # removes everything: silent features
    heard = []
    original = EMOPipeline.encode_audio
    monkeypatch.setattr(EMOPipeline, "encode_audio",
                        lambda self, waveform, *a, **k: heard.append(waveform) or original(self, waveform, *a, **k))
    out = tmp_path / "o.mp4"
    # without a path the model is found as Hallo's download keeps it: audio_separator/ beside the network's folder
    assert cli.main(["generate", "--model", str(models / "tiny"), "--audio", str(song), "--separate-vocals",
                     "--out", str(out), "--steps", "1"]) == 0
    assert "separating vocals: chunk" in capsys.readouterr().out
    assert heard[0].shape == (2, 44100) and heard[0].abs().max() < 1e-6  # the model's (empty) voice was encoded
    info = read_video_info(out)
    assert info["frame_count"] == 25 and abs(info["audio_duration"] - 1.0) < 1e-3  # the whole song stays
    # missing: named before any model loads, with where it belongs
    (tmp_path / "elsewhere" / "net").mkdir(parents=True)
    assert cli.main(["generate", "--model", str(tmp_path / "elsewhere" / "net"), "--separate-vocals", "--out",
                     str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr()
    assert "Loading model" not in err.out and str(tmp_path / "elsewhere" / "audio_separator") in err.err
