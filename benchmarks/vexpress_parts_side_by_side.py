"""V-Express's audio path, ours beside its own code on shared random weights: the Perceiver resampler
(emo_pipeline/models/perceiver_resampler.py) against its AudioProjection, and the framing
(emo_pipeline/audio/token_windows.py) against its pipeline's prepare_audio_embeddings.

Nothing of V-Express is copied here: its AudioProjection (modules/audio_projection.py) and VExpressPipeline
(pipelines/v_express_pipeline.py) are imported at run time from the user's checkout of tencent-ailab/V-Express
(benchmarks/vexpress_reference.py). Nothing is downloaded: wav2vec2 is transformers' Wav2Vec2Model in
wav2vec2-base-960h's shape with random weights, the feature extractor one with that model's settings.

    VEXPRESS_PATH=/path/to/V-Express python benchmarks/vexpress_parts_side_by_side.py [--seconds 2.77] [--seed 0]

1. The resampler: V-Express's AudioProjection built as its inference.py builds it (full size: 4 layers, 12 heads,
   5 queries, 768 wide, 29.5 M values), every parameter drawn at random (seeded), its state dict loaded into ours
   strictly; both run on the same random windows [48, 10, 768], in float64 and float32.
2. The framing: its pipeline's own prepare_audio_embeddings (wav2vec2's last_hidden_state interpolated to 2
   tokens a frame in float32, 4 zero tokens each side, frame i reading [2i, 2i + 10), its projection on all
   frames, a zero row for guidance) called on a stand-in pipeline holding the feature extractor, the random
   wav2vec2 and its random projection, beside ours (normalize_speech, last_layer, spread_to_frames,
   frame_windows, our resampler with the same weights) on the same speech (a modulated tone and noise), and
   once more from its feature extractor's normalised samples (the framing alone), for two frame counts: its own
   (the video cut to 24 + 20k frames at 30 fps) and ours (ceil(seconds · 30)). The windows its projection
   receives are caught by a forward pre-hook and compared too, and ours taken 24 frames at a time (as the
   sampler will) against ours taken whole.

Differences are max |ours - its| and that over max |its| (relative), float32 on the CPU unless stated.

Results (tencent-ailab/V-Express 6814f7d, seed 0, 2.77 s of speech, torch 2.13 CPU):
  resampler alone:  float64 1.7e-7 relative (its softmax is always taken in float32: `weight.float()`);
                    float32 8.5e-7 relative
  framing, 64 frames (its length for 2.77 s at 30 fps): windows 8.7e-7, tokens 1.4e-6 relative
  framing, 84 frames (ours, ceil(2.77 · 30)):          windows 8.3e-7, tokens 1.5e-6 relative
  the same from its feature extractor's normalised samples: windows 0 apart (the framing exact), tokens 3.3e-6 /
      3.7e-6 max (the resampler's float32 rounding, as in 1.)
  its guidance row: all zero; ours by 24-frame windows against ours whole: 0 (the same values)
So the windows differ only by the speech normalisation (ours in float64, its feature extractor's in float32) as
it passes through the random wav2vec2.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vexpress_reference as vr  # noqa: E402
from reference_common import quiet, relative  # noqa: E402

from emo_pipeline.audio.encoder import AudioEncoder, frame_count, normalize_speech  # noqa: E402
from emo_pipeline.audio.token_windows import frame_windows, last_layer, spread_to_frames  # noqa: E402
from emo_pipeline.models.perceiver_resampler import PerceiverResampler  # noqa: E402

FPS = 30.0  # its --fps default
CONTEXT_FRAMES, CONTEXT_OVERLAP = 24, 4  # its --context_frames, --context_overlap


def randomise_(module: torch.nn.Module, seed: int) -> None:
    """Every parameter drawn at random: LayerNorm weights about 1, the rest about 0.05 (biases and positions
    too, so that nothing is left at its construction value)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def its_length(seconds: float) -> int:
    """V-Express's video length for the audio (inference.py:255-262, pipelines/context.py): 24 + 20k frames."""
    n = (int(seconds * FPS) - CONTEXT_FRAMES) // (CONTEXT_FRAMES - CONTEXT_OVERLAP) + 1
    return (CONTEXT_FRAMES - CONTEXT_OVERLAP) * (n - 1) + CONTEXT_FRAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None, help="a V-Express checkout (default: VEXPRESS_PATH)")
    parser.add_argument("--seconds", type=float, default=2.77)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    path = vr.vexpress_checkout(args.reference)
    vx = vr.import_vexpress(path)
    theirs = vr.build_audio_projection(vx).eval()
    randomise_(theirs, args.seed)
    ours = PerceiverResampler().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)

    print(f"V-Express {vr.VEXPRESS_COMMIT[:7]}, torch {torch.__version__}")
    print("1. resampler alone, [48, 10, 768] random windows:")
    x = torch.randn(48, 10, 768, generator=torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            with quiet():
                ours.to(dtype), theirs.to(dtype)
            a, b = ours(x.to(dtype)), theirs(x.to(dtype))
            diff, rel = relative(a, b)
            print(f"   {str(dtype)[6:]:<8} max diff {diff:.3e}  relative {rel:.3e}  (output max {b.abs().max():.3f})")

    print("2. framing and resampler, beside its prepare_audio_embeddings:")
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(args.seed + 2)
    with quiet():
        wav2vec = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base-960h's shape, random weights
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                         return_attention_mask=False)  # its preprocessor_config.json
    samples = int(args.seconds * 16000)
    t = torch.arange(samples) / 16000
    g = torch.Generator().manual_seed(args.seed + 3)
    wave = (0.3 * torch.sin(2 * math.pi * 220 * t) * torch.sin(2 * math.pi * 3 * t)
            + 0.05 * torch.randn(samples, generator=g)).float()
    stand_in = types.SimpleNamespace(audio_processor=extractor, audio_encoder=wav2vec, audio_projection=theirs,
                                     device=torch.device("cpu"), dtype=torch.float32)
    prepare = vr.vexpress_pipeline_class(vx).prepare_audio_embeddings
    caught = []
    hook = theirs.register_forward_pre_hook(lambda _module, inputs: caught.append(inputs[0].detach().clone()))
    encoder = AudioEncoder(wav2vec)
    with quiet():
        ours.float(), theirs.float()
    lengths = {"its": its_length(args.seconds), "ours": frame_count(samples, 16000, FPS)}
    try:
        with torch.no_grad():
            hidden = last_layer(encoder, normalize_speech(wave))
            # the same, from its feature extractor's own normalised samples: the framing alone
            its_samples = torch.as_tensor(extractor(wave, return_tensors="pt", sampling_rate=16000)["input_values"][0])
            hidden_its_samples = last_layer(encoder, its_samples)
            for label, length in lengths.items():
                caught.clear()
                with quiet():
                    embeddings = prepare(stand_in, wave, length, vr.NUM_PAD_AUDIO_FRAMES, True)  # [2, L, 5, 768]
                tokens = spread_to_frames(hidden, length)
                windows = frame_windows(tokens, length)
                out = ours(windows)
                w_diff, w_rel = relative(windows, caught[0])
                o_diff, o_rel = relative(out, embeddings[1])
                starts = range(0, max(length - CONTEXT_OVERLAP, 1), CONTEXT_FRAMES - CONTEXT_OVERLAP)
                pieces = torch.cat([frame_windows(tokens, torch.arange(s, min(s + CONTEXT_FRAMES, length)))
                                    for s in starts])
                whole = torch.cat([windows[s:s + CONTEXT_FRAMES] for s in starts])
                alone = frame_windows(spread_to_frames(hidden_its_samples, length), length)
                print(f"   {length} frames ({label} length), from its normalised samples: windows max diff "
                      f"{(alone - caught[0]).abs().max().item():.1e}, tokens max diff "
                      f"{(ours(alone) - embeddings[1]).abs().max().item():.3e}")
                print(f"   {length} frames ({label} length): windows {tuple(windows.shape)} max diff {w_diff:.3e} "
                      f"relative {w_rel:.3e}; tokens {tuple(out.shape)} max diff {o_diff:.3e} relative {o_rel:.3e}; "
                      f"its guidance row all zero: {bool((embeddings[0] == 0).all())}; "
                      f"ours by 24-frame windows vs whole: {(pieces - whole).abs().max().item():.1e}")
    finally:
        hook.remove()


if __name__ == "__main__":
    main()
