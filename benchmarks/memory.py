"""Peak memory of one clip per mode for a full-size model, counted on fake tensors (nothing is
allocated or computed, so it runs in seconds on any machine).

    python benchmarks/memory.py                 # hallo config, 512², 16 + 2 frames, fp16
    python benchmarks/memory.py --markdown

Every tensor the pipeline's own code creates is recorded with its size and freed when Python
frees it (emo_pipeline/cost.py: ActivationTracker under FakeTensorMode); the largest live total
of each stage is its peak. Weights (network, VAE and wav2vec2-base) are counted apart and
added. Not counted: CUDA kernel workspaces (cuDNN, cuBLAS), the CUDA context and allocator
fragmentation, which a GPU adds on top.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import preset  # noqa: E402
from emo_pipeline.cost import clip_memory  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

# name → (sampling options, low_vram, fp8 weights)
MODES = {
    "quality / balanced (default)": (SamplingOptions(preset="quality"), False, False),
    "fast (DeepCache keeps deep features)": (SamplingOptions(preset="fast"), False, False),
    "low-VRAM, fp16 weights": (SamplingOptions(preset="quality"), True, False),
    "low-VRAM, fp8 weights": (SamplingOptions(preset="quality"), True, True),
    "low-VRAM, fp8 weights, fast": (SamplingOptions(preset="fast"), True, True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="hallo")
    parser.add_argument("--size", type=int)
    parser.add_argument("--decode-chunk", type=int, default=8, help="frames the VAE decodes at once (default mode)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    config = preset(args.config)
    if args.size:
        config = config.with_overrides(sample_size=args.size)
    gib = 2**30
    columns = ["weights", "ReferenceNet", "denoising step", "VAE decode", "peak activations", "peak total"]
    print(f"GiB, config {config.name}, {config.sample_size}², {config.frames_per_clip} + {config.motion_frames} frames, "
          f"fp16, VAE decode chunk {args.decode_chunk} (1 in low-VRAM mode)\n")
    if args.markdown:
        print("| mode | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
    else:
        print(f"{'mode':40s}" + "".join(f"{c:>18s}" for c in columns))
    for name, (options, low_vram, fp8) in MODES.items():
        options.decode_chunk_size = args.decode_chunk
        m = clip_memory(config, options, torch.float16, low_vram=low_vram, fp8_weights=fp8)
        values = [m.weights, m.reference_net, m.denoising, m.vae_decode, m.activations, m.total]
        cells = [f"{v / gib:.2f}" for v in values]
        if args.markdown:
            print(f"| {name} | " + " | ".join(cells) + " |")
        else:
            print(f"{name:40s}" + "".join(f"{c:>18s}" for c in cells))


if __name__ == "__main__":
    main()
