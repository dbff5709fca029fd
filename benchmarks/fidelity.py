"""What each sampling mode costs in fidelity, against the exact output (Hallo's 40-step DDIM).

    python benchmarks/fidelity.py                  # the bundled demo model, every mode (about an hour on 2 CPU cores)
    python benchmarks/fidelity.py --modes fast balanced
    python benchmarks/fidelity.py --hallo-smoke    # full-size random Hallo weights at a small size

On the demo model (train-demo's held-out drawn faces, never trained on; two 4-s clips, 200
frames, seed 0): lip-sync r (mouth opening read from the pixels against the loudness labels, as
evaluate-demo measures it) and PSNR of the frames against the exact 40-step output. On random
full-size Hallo weights: the relative difference of one clip's final latents from the exact
path's, a smoke check only (random weights say nothing about what a trained model loses).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

EXACT = {"steps": 40}  # Hallo's sampling: DDIM, guidance on every step
MODES = {
    "exact (quality preset)": EXACT,
    "model's own sampling (demo: 10 DDIM steps)": {},
    "balanced": {"preset": "balanced"},
    "fast": {"preset": "fast"},
    "UniPC 12 steps": {"steps": 12, "scheduler": "unipc"},
    "DPM-Solver++ 2M 12 steps": {"steps": 12, "scheduler": "dpmpp_2m"},
    "UniPC 12, DeepCache 2": {"steps": 12, "scheduler": "unipc", "cache_interval": 2},
    "UniPC 12, guidance first half": {"steps": 12, "scheduler": "unipc", "guidance_interval": (0.0, 0.5)},
    "low-VRAM (exact)": {**EXACT, "low_vram": True},
    "fp8 weights (exact)": {**EXACT, "fp8": True},
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def demo_fidelity(modes: list[str], model: Path, seed: int) -> list[dict]:
    from emo_pipeline.components import load_pipeline
    from emo_pipeline.training.demo import generate_held_out
    from emo_pipeline.training.synthetic import make_dataset, mouth_opening

    results, exact_video = [], None
    with tempfile.TemporaryDirectory() as tmp:
        clips = make_dataset(tmp, 2, seed=seed + 1, seconds=4.0, size=64)  # train-demo's held-out clips
        for name in ["exact (quality preset)"] + [m for m in modes if m != "exact (quality preset)"]:
            mode = dict(MODES[name])
            low_vram, fp8 = mode.pop("low_vram", False), mode.pop("fp8", False)
            pipe = load_pipeline(model / "net.safetensors", low_vram=low_vram, fp8_weights=fp8)
            started = time.perf_counter()
            videos, measured, labels = [], [], []
            for clip in clips:
                video, meta, _ = generate_held_out(pipe, clip, seed=seed, head_speed=0.0, **mode)
                videos.append(video)
                measured.append(mouth_opening(video, meta["face_box"]).numpy())
                labels.append(np.array(meta["mouth_open"][: len(video)]))
            video = torch.cat(videos)
            exact_video = video if exact_video is None else exact_video
            r = float(np.corrcoef(np.concatenate(measured), np.concatenate(labels))[0, 1])
            row = {"mode": name, "lip_sync_r": round(r, 3), "psnr_vs_exact_db": round(psnr(video, exact_video), 2),
                   "cpu_seconds": round(time.perf_counter() - started, 1)}
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def hallo_smoke(modes: list[str], size: int, frames: int, seed: int) -> list[dict]:
    """Full-size random Hallo weights (fp32, CPU) at `size` pixels: one clip's final latents."""
    from emo_pipeline.config import hallo_config
    from emo_pipeline.cost import full_size_pipeline
    from emo_pipeline.tiny import randomize_

    config = hallo_config().with_overrides(sample_size=size, frames_per_clip=frames)
    torch.manual_seed(seed)
    pipe = full_size_pipeline(config, device="cpu", dtype=torch.float32)
    randomize_(pipe.net, seed, scale=0.02)  # the zero-initialised layers too, so every path acts
    portrait = pipe.prepare_portrait(torch.rand(size, size, 3, generator=torch.Generator().manual_seed(seed)),
                                     face_box=(0.3, 0.25, 0.7, 0.75))
    audio = pipe.encode_audio(torch.randn(1, round(16000 * frames / 25), generator=torch.Generator().manual_seed(1)),
                              16000)
    results, exact = [], None
    for name in ["exact (quality preset)"] + [m for m in modes if m != "exact (quality preset)"]:
        mode = dict(MODES[name])
        if mode.pop("fp8", False) or mode.pop("low_vram", False):
            continue  # checked on the demo model and in the tests
        latents = []
        pipe.decode_latents = lambda z, chunk_size=8: latents.append(z.clone()) or torch.zeros(len(z), size, size, 3)
        started = time.perf_counter()
        pipe.generate(portrait, audio, SamplingOptions(seed=seed, **mode))
        z = torch.cat(latents)
        exact = z if exact is None else exact
        row = {"mode": name, "relative_latent_difference": round(float((z - exact).norm() / exact.norm()), 4),
               "cpu_seconds": round(time.perf_counter() - started, 1)}
        print(json.dumps(row), flush=True)
        results.append(row)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="*", help=f"mode names or keywords (default: all): {', '.join(MODES)}")
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "models" / "demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hallo-smoke", action="store_true", help="full-size random Hallo weights instead")
    parser.add_argument("--size", type=int, default=128, help="--hallo-smoke image size")
    parser.add_argument("--frames", type=int, default=4, help="--hallo-smoke frames per clip")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    modes = [m for m in MODES if not args.modes or any(k.lower() in m.lower() for k in args.modes)]
    if args.hallo_smoke:
        hallo_smoke(modes, args.size, args.frames, args.seed)
    else:
        demo_fidelity(modes, Path(args.model), args.seed)


if __name__ == "__main__":
    main()
