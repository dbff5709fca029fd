"""Counted peak memory of a whole render per memory mode, as memory_mode auto counts it (emo_pipeline/memory_plan.py:
`counted_peak`): the weights on the device, plus the largest stage of one clip or window (ReferenceNet pass, denoising
step with the window's pose encoding, VAE decode chunk), whatever the video's length: context-window families
(EchoMimic v1 and v2) keep the whole video's latents in host memory (printed beside it, as host RAM). Counted on
fake tensors (cost.py), not measured on a card: CUDA's context, kernel workspaces and fragmentation come on top.

    python benchmarks/video_memory.py --config echomimic-v2 --seconds 10
    python benchmarks/video_memory.py --config echomimic-v2-acc --seconds 600 --markdown
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import preset  # noqa: E402
from emo_pipeline.cost import clip_memory, host_latent_bytes, vae_decode_memory  # noqa: E402
from emo_pipeline.memory_plan import MODES, counted_peak  # noqa: E402
from emo_pipeline.sampling.presets import resolve_options  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

LABELS = {"normal": "normal", "low_vram": "low-VRAM", "low_vram_fp8": "low-VRAM + fp8 weights"}
GIB = 2**30


def rows(config_name: str, seconds: float, decode_chunk: int, dtype: torch.dtype = torch.float16) -> list[dict]:
    config = preset(config_name)
    options = SamplingOptions(decode_chunk_size=decode_chunk)
    frames = math.ceil(seconds * config.fps - 1e-9)
    out = []
    for mode in MODES:
        peak = counted_peak(config, options, dtype, mode, decode_chunk)
        clip = clip_memory(config, options, dtype, low_vram=mode != "normal", fp8_weights=mode == "low_vram_fp8")
        chunk = 1 if mode != "normal" else min(decode_chunk, resolve_options(options, config).frames_per_clip)
        stages = {"ReferenceNet": clip.reference_net, "denoising": clip.denoising,
                  f"VAE decode ({chunk} frame{'s' if chunk > 1 else ''})": vae_decode_memory(config, chunk, dtype)}
        largest = max(stages, key=stages.get)
        latents = host_latent_bytes(config, frames, dtype)
        assert peak == clip.weights + stages[largest]  # the same sum as memory_mode auto's
        out.append({"mode": mode, "frames": frames, "peak": peak, "weights": clip.weights, "stages": stages,
                    "largest": largest, "latents": latents})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="echomimic-v2")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--decode-chunk", type=int, default=8, help="frames the VAE decodes at once in normal mode")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    config = preset(args.config)
    table = rows(args.config, args.seconds, args.decode_chunk)
    print(f"GiB, counted: {config.name}, {config.sample_size}², {args.seconds:g} s = {table[0]['frames']} frames at "
          f"{config.fps:g} fps, fp16\n")
    columns = ["weights", "ReferenceNet", "denoising", "VAE decode", "peak", "host latents", "largest stage"]
    if args.markdown:
        print("| mode | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
    else:
        print(f"{'mode':24s}" + "".join(f"{c:>15s}" for c in columns[:-1]) + f"   {columns[-1]}")
    for row in table:
        stages = list(row["stages"].values())
        values = [row["weights"], *stages, row["peak"], row["latents"]]
        cells = [f"{v / GIB:.2f}" for v in values] + [row["largest"]]
        if args.markdown:
            print(f"| {LABELS[row['mode']]} | " + " | ".join(cells) + " |")
        else:
            print(f"{LABELS[row['mode']]:24s}" + "".join(f"{c:>15s}" for c in cells[:-1]) + f"   {cells[-1]}")
    print("\nlargest stage, of: ReferenceNet (the portrait's pass, once), denoising (one window's Backbone call, both "
          f"rows when guided, with its poses encoded), VAE decode (a chunk of {args.decode_chunk} frames in normal "
          "mode, 1 in the low-VRAM modes); host latents: the whole video's, 4 copies, in host RAM, not on the device")


if __name__ == "__main__":
    main()
