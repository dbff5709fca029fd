"""emotion2vec+ large, ours against FunASR's own Emotion2vec on shared random full-size weights.

FunASR's module (funasr/models/emotion2vec/, imported from the checkout named by FUNASR_PATH through
emotion2vec_reference.py; its one extra library, omegaconf, from FUNASR_LIBS) is built with the large
model_conf and vocab_size 9, as FunASR's AutoModel builds it for emotion2vec/emotion2vec_plus_large. Every
parameter is drawn at the scale of a real initialisation (conv feature extractor: Kaiming normal; positional
convs: wav2vec 2.0's normal(0, sqrt(4 / (k·D))); linear layers and the decoder: normal(0, 0.02) as data2vec's
init; LayerNorm gains 1 + 0.1·N and biases 0.1·N so that they count; extra tokens N(0, 1); ALiBi scales
uniform in [0.5, 1.5]), saved as a pickled OrderedDict of FunASR's keys (the hub file's layout) and read back
by our `load_emotion2vec` (weights-only, strict); FunASR's module takes the same tensors.

The audio is a real file: emo_pipeline.demo_inputs.speech_like_audio (syllabic voiced sound with pauses,
4.5 s) written as a 16 kHz mono 16-bit WAV with PyAV and read back with emo_pipeline.io.media.load_audio.
Both sides are run as MEMO runs emotion2vec (memo/utils/audio_utils.py's extract_emotion): channel 0, each
segment layer-normed without affine (F.layer_norm(x, x.shape)), extract_features(x)["x"], the mean over time.
The segments are MEMO's for this length: the first 2 s, the 3 s windows [i - 1 s, i + 2 s) for i = 1 s, 2 s,
3 s (the last cut at the end of the file), and the last 2 s; and the whole file. Relative difference:
max |ours - theirs| / max |theirs|, fp32 on the CPU.

Result (CPU, torch 2.13.0+cpu, FunASR at 3c58cb5, seed 0):

    model.pt in the hub layout (0.66 GB: the network alone) read by load_emotion2vec: the large config,
      195 tensors, no entry ignored
    whole file (4.5 s, 224 frames x 1024): frame features 1.1e-06, time-averaged vector 1.7e-07
    MEMO's segments (5: first 2 s, [0, 3) s, [1, 4) s, [2, 4.5) s, last 2 s): frame features at most
      1.0e-06, time-averaged vectors at most 3.0e-07
    (the features are not flat: over the whole file their spread over time is 0.31 of their spread overall)

    FUNASR_PATH=/tmp/scratch/funasr FUNASR_LIBS=/tmp/scratch/funasrlib python benchmarks/emotion2vec_side_by_side.py
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

import emotion2vec_reference as er  # noqa: E402
from reference_common import relative  # noqa: E402

from emo_pipeline.audio.emotion2vec import LARGE, SAMPLE_RATE, load_emotion2vec, prepare_segment  # noqa: E402
from emo_pipeline.demo_inputs import speech_like_audio  # noqa: E402
from emo_pipeline.io.media import load_audio  # noqa: E402


def random_state(reference: torch.nn.Module, seed: int) -> collections.OrderedDict:
    """Every parameter of FunASR's module drawn at a real initialisation's scale (see the module docstring)."""
    gen = torch.Generator().manual_seed(seed)
    state = collections.OrderedDict()
    for key, value in reference.state_dict().items():
        shape = value.shape
        noise = torch.randn(shape, generator=gen)
        if key.endswith("alibi_scale"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif key.endswith("extra_tokens"):
            value = noise
        elif len(shape) == 1:  # LayerNorm gains and biases, linear and conv biases
            gain = key.endswith(".weight")
            value = 1 + 0.1 * noise if gain else (0.1 if "norm" in key or ".2.1." in key or "features.1." in key
                                                 else 0.02) * noise
        elif ".local_encoder." in key:  # nn.init.kaiming_normal_ (fan_in)
            value = noise * math.sqrt(2 / math.prod(shape[1:]))
        elif ".relative_positional_encoder." in key:
            value = noise * math.sqrt(4 / (shape[2] * LARGE.embed_dim))
        else:
            value = 0.02 * noise
        state[key] = value.float().contiguous()
    return state


def write_wav(path: Path, sound: torch.Tensor) -> None:
    """A 16 kHz mono 16-bit WAV written with PyAV."""
    samples = np.clip(np.rint(sound.numpy().astype(np.float64) * 32768), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples[None], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def memo_segments(wav: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """MEMO's segments of one channel (audio_utils.py's start, middle and end segments)."""
    rate = SAMPLE_RATE
    segments = [("first 2 s", wav[: rate * 2])]
    for i in range(rate, len(wav) - rate, rate):
        segments.append((f"[{i // rate - 1} s, {i // rate + 2} s)", wav[i - rate: i - rate + rate * 3]))
    segments.append(("last 2 s", wav[-rate * 2:]))
    return segments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    module = er.import_funasr_emotion2vec(er.funasr_checkout())
    reference = er.build_funasr_emotion2vec(module, LARGE).eval()
    state = random_state(reference, args.seed)
    reference.load_state_dict(state, strict=True, assign=True)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        torch.save(state, Path(tmp) / "model.pt")
        ours = load_emotion2vec(Path(tmp) / "model.pt")
        print(f"model.pt in the hub layout ({(Path(tmp) / 'model.pt').stat().st_size / 1e9:.2f} GB) read by "
              f"load_emotion2vec in {time.perf_counter() - started:.1f} s; config {ours.config}; "
              f"ignored entries: {ours.ignored_keys}")
        write_wav(Path(tmp) / "speech.wav", speech_like_audio(args.seconds)[0])
        waveform, rate = load_audio(Path(tmp) / "speech.wav")
    assert rate == SAMPLE_RATE
    wav = waveform[0]  # MEMO: wav[0].view(-1)
    del state

    rows = [("whole file", wav)] + memo_segments(wav)
    worst = {"frames": 0.0, "mean": 0.0}
    for name, segment in rows:
        theirs_in = F.layer_norm(segment, segment.shape).view(1, -1)  # MEMO's extract_emotion
        ours_in = prepare_segment(segment, SAMPLE_RATE)
        assert torch.equal(theirs_in, ours_in)
        theirs = reference.extract_features(theirs_in)["x"]
        mine = ours.extract_features(ours_in)["x"]
        assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
        _, frames = relative(mine, theirs)
        _, mean = relative(mine.mean(dim=1), theirs.mean(dim=1))
        print(f"{name:>16}: {segment.numel() / SAMPLE_RATE:.2f} s, {theirs.shape[1]} frames x {theirs.shape[2]}: "
              f"frame features {frames:.1e}, time-averaged vector {mean:.1e}")
        if name == "whole file":
            spread = (theirs[0].std(dim=0).mean() / theirs[0].std()).item()
            print(f"{'':>16}  spread of the features over time / over everything: {spread:.2f}")
        else:
            worst = {"frames": max(worst["frames"], frames), "mean": max(worst["mean"], mean)}
    print(f"MEMO's segments ({len(rows) - 1}): frame features at most {worst['frames']:.1e}, time-averaged vectors "
          f"at most {worst['mean']:.1e}")


if __name__ == "__main__":
    main()
