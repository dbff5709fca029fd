"""Per-stage time, seconds per second of video and peak memory of one generation, per mode, with
random weights, on CPU or GPU.

    python benchmarks/stage_times.py --config tiny --seconds 2
    python benchmarks/stage_times.py --config hallo --device cuda --seconds 4 --modes quality balanced fast low-vram low-vram-fp8

Stages: audio features (wav2vec), reference net (once per clip), denoising (all steps), VAE
decode. Full-size configs use a full-size random VAE and wav2vec2-base as well. Modes: the
sampling presets, and low-VRAM mode with fp16 or fp8 weights (quality sampling). On CUDA the
peak is torch.cuda.max_memory_allocated, weights included.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import preset  # noqa: E402
from emo_pipeline.demo_inputs import drawn_portrait, speech_like_audio  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# mode → (sampling preset, low_vram, fp8 weights)
MODES = {
    "quality": ("quality", False, False),
    "balanced": ("balanced", False, False),
    "fast": ("fast", False, False),
    "low-vram": ("quality", True, False),
    "low-vram-fp8": ("quality", True, True),
}


def build(config_name: str, size: int | None, device: str, dtype: torch.dtype, low_vram: bool, fp8: bool,
          compile: bool) -> EMOPipeline:
    from emo_pipeline.cost import full_size_pipeline
    from emo_pipeline.tiny import tiny_components

    config = preset(config_name)
    if size:
        config = config.with_overrides(sample_size=size)
    # fp8 storage is made on the CPU, so the device never holds the fp16 network
    where = "cpu" if fp8 else device
    if config_name.startswith("tiny"):
        pipe = EMOPipeline(*tiny_components(config), device=where, dtype=dtype, low_vram=low_vram, compile=compile)
    else:
        pipe = full_size_pipeline(config, device=where, dtype=dtype, low_vram=low_vram)
        pipe.compile = compile
    if fp8:
        pipe.store_weights_fp8().to(device)
    return pipe


def run_mode(args, mode: str, dtype: torch.dtype) -> None:
    sampling, low_vram, fp8 = MODES[mode]
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()
    pipe = build(args.config, args.size, args.device, dtype, low_vram, fp8, args.compile)
    build_s = time.perf_counter() - t0
    pipe.profile = True
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    audio = pipe.encode_audio(speech_like_audio(args.seconds), 16000)
    portrait = pipe.prepare_portrait(drawn_portrait(pipe.config.sample_size))
    options = SamplingOptions(preset=sampling, steps=args.steps, decode_chunk_size=args.decode_chunk)
    t0 = time.perf_counter()
    frames = sum(len(clip) for clip in pipe.iter_clips(portrait, audio, options))
    total = time.perf_counter() - t0 + pipe.timings.get("audio features", 0.0)
    cfg = pipe.config
    print(f"mode {mode}: config {cfg.name}, {cfg.sample_size}px, {frames} frames ({args.seconds:g} s audio), "
          f"{args.device} {str(dtype).replace('torch.', '')}{', compiled' if args.compile else ''}; "
          f"model built in {build_s:.1f} s")
    for stage in ("audio features", "reference net", "denoising", "vae decode"):
        print(f"  {stage:15s} {pipe.timings.get(stage, 0.0):8.2f} s")
    print(f"  {'total':15s} {total:8.2f} s   ({total / args.seconds:.2f} s per second of video)")
    if cuda:
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB "
              f"({torch.cuda.get_device_name()})")
    else:
        print(f"  peak CPU memory (max RSS of the process so far) {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    del pipe
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="tiny, tiny-emo, hallo or emo")
    parser.add_argument("--size", type=int, help="image size in pixels (default: the config's)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--steps", type=int, help="override the preset's step count")
    parser.add_argument("--modes", nargs="+", default=["quality"], choices=list(MODES))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES))
    parser.add_argument("--decode-chunk", type=int, default=8)
    args = parser.parse_args()
    dtype = DTYPES[args.dtype] if args.dtype else (torch.float16 if args.device.startswith("cuda") else torch.float32)
    for mode in args.modes:
        run_mode(args, mode, dtype)


if __name__ == "__main__":
    main()
