"""Per-stage time and peak memory of one generation, on CPU or GPU, with random weights.

    python benchmarks/stage_times.py --config tiny --seconds 2
    python benchmarks/stage_times.py --config hallo --device cuda --dtype fp16 --seconds 2 --steps 40

Stages: audio features (wav2vec), reference net (once per clip), denoising (all steps), VAE
decode. Full-size configs use a full-size random VAE and wav2vec2-base shape as well.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import preset  # noqa: E402
from emo_pipeline.demo_inputs import drawn_portrait, speech_like_audio  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline, SamplingOptions  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build(config_name: str, size: int | None, device: str, dtype: torch.dtype) -> EMOPipeline:
    from emo_pipeline.tiny import tiny_components

    config = preset(config_name)
    if size:
        config = config.with_overrides(sample_size=size)
    if config_name.startswith("tiny"):
        return EMOPipeline(*tiny_components(config), device=device, dtype=dtype)
    from diffusers import AutoencoderKL
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from emo_pipeline.audio.encoder import AudioEncoder
    from emo_pipeline.models import EMONet

    # Build on the target device directly: a full-size fp32 copy on the CPU first would double memory.
    with torch.device(device):
        net = EMONet(config).to(dtype)
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        )
        wav2vec = Wav2Vec2Model(Wav2Vec2Config())  # wav2vec2-base shape
    return EMOPipeline(net, vae, AudioEncoder(wav2vec), device=device, dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="tiny, tiny-emo, hallo or emo")
    parser.add_argument("--size", type=int, help="image size in pixels (default: the config's)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES))
    parser.add_argument("--decode-chunk", type=int, default=8)
    args = parser.parse_args()
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)

    t0 = time.perf_counter()
    pipe = build(args.config, args.size, args.device, dtype)
    build_s = time.perf_counter() - t0
    pipe.profile = True
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    audio = pipe.encode_audio(speech_like_audio(args.seconds), 16000)
    portrait = pipe.prepare_portrait(drawn_portrait(pipe.config.sample_size))
    t0 = time.perf_counter()
    frames = 0
    for clip in pipe.iter_clips(portrait, audio, SamplingOptions(steps=args.steps, decode_chunk_size=args.decode_chunk)):
        frames += len(clip)
    total = time.perf_counter() - t0 + pipe.timings.get("audio features", 0.0)

    cfg = pipe.config
    print(f"config {cfg.name}, {cfg.sample_size}px, {frames} frames ({args.seconds:g} s audio), "
          f"{args.steps or cfg.steps} steps, {args.device} {str(dtype).replace('torch.', '')}; model built in {build_s:.1f} s")
    for stage in ("audio features", "reference net", "denoising", "vae decode"):
        print(f"  {stage:15s} {pipe.timings.get(stage, 0.0):8.2f} s")
    print(f"  {'total':15s} {total:8.2f} s   ({total / max(frames, 1):.3f} s/frame)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak CPU memory (max RSS) {rss:.2f} GiB")
    if args.device.startswith("cuda"):
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
