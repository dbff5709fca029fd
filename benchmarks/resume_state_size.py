"""What a render's kept progress (emo_pipeline/render_state.py) weighs at 512², computed from the
shapes (nothing is rendered): the frames' bound and each family's carry, per minute of video.

    python benchmarks/resume_state_size.py

Frames: at most the raw uint8 size (the lossless segments are usually smaller, by how much depends on
the picture). Carry: only the latest is kept, so it does not grow with the length, except EchoMimic's,
which is the whole video's latents.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import echomimic_config, hallo_config, memo_config  # noqa: E402
from emo_pipeline.cost import full_size_pipeline  # noqa: E402
from emo_pipeline.sampling.memo_memory import MemoryConditions  # noqa: E402
from emo_pipeline.sampling.presets import resolve_options  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

MIB = 2**20


def memo_memory_bytes(dtype: torch.dtype) -> int:
    """MEMO's temporal memory after a clip, counted on meta tensors of the full-size network."""
    pipe = full_size_pipeline(memo_config(), "meta", dtype)
    cfg = pipe.config
    opts = resolve_options(SamplingOptions(), cfg)
    size = cfg.sample_size
    portrait = pipe.prepare_portrait(torch.rand(size, size, 3), face_box=(0.25, 0.2, 0.75, 0.8)).to("meta", dtype)
    ref_latent = torch.empty(1, 4, size // 8, size // 8, device="meta", dtype=dtype)
    use_cfg = opts.guidance_scale > 1
    conditions = MemoryConditions(pipe, portrait, ref_latent, opts, use_cfg)
    previous = torch.empty(opts.motion_frames, size, size, 3, device="meta")
    pipe.encode_images = lambda pixels: torch.empty(len(pixels), 4, size // 8, size // 8, device="meta", dtype=dtype)
    _, _, memory = conditions.reference_features(previous, torch.Generator())
    return sum(m.kv.numel() * m.kv.element_size() + m.z.numel() * m.z.element_size() for ms in memory for m in ms)


def main() -> None:
    side, fps_hallo, fps_echo = 512, 25, 24
    frame = side * side * 3
    print(f"frames, raw uint8 bound: {frame * fps_hallo * 60 / MIB:.0f} MiB per minute at 25 fps, "
          f"{frame * fps_echo * 60 / MIB:.0f} MiB at 24 fps")
    hallo = resolve_options(SamplingOptions(), hallo_config())
    print(f"Hallo carry: {hallo.motion_frames} motion frames in float32, "
          f"{hallo.motion_frames * frame * 4 / MIB:.1f} MiB, whatever the length")
    for dtype in (torch.float16, torch.float32):
        print(f"MEMO carry ({str(dtype)[6:]}): {memo_memory_bytes(dtype) / MIB:.0f} MiB, whatever the length")
    latent = 4 * (side // 8) ** 2
    for dtype, size in (("fp16", 2), ("fp32", 4)):
        per_minute = latent * fps_echo * 60 * size
        print(f"EchoMimic carry ({dtype}): latents {per_minute / MIB:.0f} MiB per minute (DDIM); up to "
              f"{3 * per_minute / MIB:.0f} MiB with dpmpp_2m/unipc's two kept predictions")


if __name__ == "__main__":
    main()
