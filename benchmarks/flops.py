"""FLOPs per second of video, per stage and per sampling mode, for a full-size model (meta tensors:
nothing is computed, so it runs in seconds on any machine).

    python benchmarks/flops.py                      # hallo config, 512², 10 s of audio
    python benchmarks/flops.py --seconds 60 --markdown

Modes: the presets (quality = Hallo's default sampling: 40 DDIM steps, guidance on every step),
single knobs, and low-VRAM mode. The ratio column is each mode's total against quality's. With
HALLO_PATH set to a checkout of Hallo, its own network's guided step is counted too (see
hallo_side_by_side.py) and Hallo's own code per video second is printed beside ours.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.config import preset  # noqa: E402
from emo_pipeline.cost import STAGES, full_size_pipeline, video_flops  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

MODES = {
    "quality (Hallo's default)": (SamplingOptions(preset="quality"), False),
    "balanced": (SamplingOptions(preset="balanced"), False),
    "fast": (SamplingOptions(preset="fast"), False),
    "DPM-Solver++ 2M, 20 steps": (SamplingOptions(scheduler="dpmpp_2m", steps=20), False),
    "UniPC, 12 steps": (SamplingOptions(scheduler="unipc", steps=12), False),
    "guidance on the first half": (SamplingOptions(guidance_interval=(0.0, 0.5)), False),
    "DeepCache, interval 2": (SamplingOptions(cache_interval=2), False),
    "DeepCache, interval 3": (SamplingOptions(cache_interval=3), False),
    "low-VRAM (quality)": (SamplingOptions(preset="quality"), True),
}

SHORT = {"audio encoder": "audio enc", "portrait": "portrait", "audio projection": "audio proj",
         "reference net": "ReferenceNet", "vae encode": "VAE enc", "pose encoder": "pose enc",
         "denoiser, conditional rows": "denoise cond",
         "denoiser, unconditional rows": "denoise uncond", "vae decode": "VAE dec"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="hallo")
    parser.add_argument("--size", type=int, help="image size (default: the config's, 512)")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length the video is made for")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()

    config = preset(args.config)
    if args.size:
        config = config.with_overrides(sample_size=args.size)
    pipe = full_size_pipeline(config)
    rows = {}
    for name, (options, low_vram) in MODES.items():
        pipe.low_vram = low_vram
        try:
            rows[name] = video_flops(pipe, options, args.seconds)
        except ValueError as refused:  # a mode the family does not offer (DeepCache with context windows)
            print(f"{name}: not offered for {config.name} ({refused})")
    baseline = rows["quality (Hallo's default)"].total
    first = next(iter(rows.values()))
    print(f"TFLOPs per second of video (EchoMimic rows: its own config, 24 fps, windows of 12 frames): "
          f"config {config.name}, {config.sample_size}², "
          f"{config.frames_per_clip}-frame clips + {config.motion_frames} motion frames, {args.seconds:g} s of audio "
          f"= {first.frames} frames in {first.clips} clips at {config.fps:g} fps (FLOPs counted on meta tensors)\n")
    hallo = _hallo_own_code(config, args.seconds, rows["quality (Hallo's default)"])
    if hallo is not None:
        rows["Hallo's own code (its inference script)"] = hallo
    if config.family == "emo" and not args.size:
        # The other family on the same engine, each with its own sampling (24 fps, context windows
        # of 12 frames overlapping by 3, no motion frames): per second of video, as the rows above.
        for name, family_config in (("EchoMimic (30 DDIM steps, cfg 2.5)", preset("echomimic")),
                                    ("EchoMimic acc (6 steps, no guidance)", preset("echomimic-acc"))):
            rows[name] = video_flops(full_size_pipeline(family_config), SamplingOptions(), args.seconds)
        for name, cost in rows.items():  # one Backbone call of each kind, for comparing the networks
            if name.startswith("EchoMimic") or name.startswith("quality"):
                calls = ", ".join(f"{'guided' if guided else 'conditional only'}: {flops / 1e12:.2f}"
                                  for (guided, reuse), flops in sorted(cost.per_step.items()) if not reuse)
                print(f"{name}: one Backbone call ({'window' if name.startswith('EchoMimic') else 'clip'}), "
                      f"TFLOPs: {calls}")
    columns = [SHORT[s] for s in STAGES] + ["total", "vs quality"]
    if args.markdown:
        print("| mode | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
    else:
        print(f"{'mode':40s}" + "".join(f"{c:>15s}" for c in columns))
    for name, cost in rows.items():
        values = [f"{cost.per_second(s) / 1e12:.2f}" for s in STAGES]
        values += [f"{cost.per_second() / 1e12:.1f}", f"{cost.total / baseline:.3f}"]
        if args.markdown:
            print(f"| {name} | " + " | ".join(values) + " |")
        else:
            print(f"{name:40s}" + "".join(f"{v:>15s}" for v in values))


def _hallo_own_code(config, seconds: float, ours):
    """Our quality row with the denoiser replaced by Hallo's own network's count (HALLO_PATH only)."""
    if not os.environ.get("HALLO_PATH") or config.name != "hallo":
        return None
    from dataclasses import replace

    from hallo_side_by_side import hallo_step_flops

    ours_step = ours.per_step[True, False]
    hallo_step = hallo_step_flops(config)
    scale = hallo_step / ours_step
    stages = dict(ours.stages)
    for stage in ("denoiser, conditional rows", "denoiser, unconditional rows"):
        stages[stage] = round(stages[stage] * scale)
    print(f"Hallo's own code, one guided step: {hallo_step / 1e12:.2f} TFLOPs; ours: {ours_step / 1e12:.2f} TFLOPs "
          f"({ours_step / hallo_step:.3f}x). Its denoiser rows below are ours scaled by that ratio; its other "
          "stages are the same computations as ours.\n")
    return replace(ours, stages=stages)


if __name__ == "__main__":
    main()
