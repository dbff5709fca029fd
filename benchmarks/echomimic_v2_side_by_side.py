"""EchoMimic v2's own pipelines and ours on the same random full-size weights: short whole videos through
its standard pipeline (EchoMimicV2Pipeline, guidance 2.5) and through its accelerated one
(pipeline_echomimicv2_acc.py, no guidance, its own 6 steps), with the same poses, whisper tokens,
portrait and seed.

EchoMimic v2's networks are built from a checkout named by ECHOMIMIC_V2_PATH, as its infer.py builds
them (benchmarks/echomimic_v2_reference.py, through echomimic_reference.py's harness: imported at run
time, never copied), every parameter drawn at random (zero-initialised layers included; the pose
encoder's convolutions at He's scale, so that the poses count: see echomimic_v2_reference.py). Our
EMONet of `echomimic_v2_config()` (and `echomimic_v2_acc_config()`), its size set to the small one,
takes the very same tensors (`load_state_dict(strict=True, assign=True)`: one copy of the weights).
Both sides get:
  * the same pose images: a demo pose sequence of the checkout (assets/halfbody_demo/pose/01, read by
    our load_pose_folder), its first F frames placed for the small frame and drawn by our draw_hands;
    its pipeline gets them as infer.py builds its poses_tensor, [1, 3, F, H, W] in [0, 1], and our
    loop draws the same images itself, window by window (SamplingOptions(poses=...)); the drawing's
    own parity with the reference's OpenCV code is benchmarks/echomimic_v2_pose_drawing.py;
  * the same whisper tokens: random 50 Hz whisper features cut into each frame's 50 tokens by our
    `frame_tokens`, handed to its pipeline through the stand-in audio guider (its audio2feat and
    feature2chunks);
  * the same portrait (random pixels, already at the size: its VaeImageProcessor resizes nothing) and
    seed (both draw the initial noise with torch.randn on a CPU generator in fp32, then clamp to ±1.5);
  * a small random VAE, shared.

    ECHOMIMIC_V2_PATH=/path/to/echomimic_v2 PYTHONPATH=/path/to/einops+omegaconf \\
        python benchmarks/echomimic_v2_side_by_side.py     # 64², 20 frames (3 windows), 3 and 6 steps

Printed: max |ours - theirs| and the relative difference max|ours - theirs| / max|theirs| of the final
latents and of the decoded frames, with both wall times, for each pipeline. fp32 on the CPU. v2 rounds
its reference features to fp16 even in fp32 (ReferenceAttentionControl.update's default dtype), which is
switched off on its side (`reference_bank_dtype=None`) so that both sides compute in fp32; the effect of
that rounding alone (its pipeline with the fp16 bank against itself with the fp32 one) is printed too.
So is what a mix-up of the poses would show: ours with the pose sequence reversed (every frame given
another frame's hands) against its standard pipeline. --no-extras skips these three extra runs.

Why these settings: its standard pipeline always duplicates the reference bank for guidance
(pipeline_echomimicv2.py:543), so it runs only with cfg > 1 (at cfg 1 it stops with a size mismatch at
mutual_self_attention.py:151; tried), and without guidance it would sum overlapping windows instead of
averaging them (:595-599); its accelerated pipeline handles cfg 1 (:434, :495-496 there) and is what
runs without guidance. So: standard with cfg 2.5, accelerated with cfg 1.

Results (a312dec; the defaults: 64², 20 frames = 3 windows, demo poses 01; fp32, 2 threads of this
project's shared CPU; docs/families/echomimic.md):
  standard, 3 steps, cfg 2.5:     final latents 1.07e-5 (relative 2.1e-6), frames 9.6e-6
  accelerated, 6 steps, cfg 1:    final latents 2.86e-6 (relative 5.6e-7), frames 4.8e-6
  its fp16 reference bank alone:  3.1e-5 (standard) and 1.4e-5 (accelerated) relative, final latents
  ours with the poses reversed:   0.20 relative against its standard pipeline
  wall (quiet machine): its standard 28 s, ours 25 s; its accelerated 32 s, ours 32 s; the script 3.5 min
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from echomimic_reference import tiny_vae  # noqa: E402
from echomimic_side_by_side import generate_recording_latents, inputs, our_pipeline  # noqa: E402
from echomimic_v2_reference import (ECHOMIMIC_V2_COMMIT, build_networks, demo_poses, load_echomimic_v2,  # noqa: E402
                                    poses_tensor, run_pipeline)
from reference_common import relative  # noqa: E402

from emo_pipeline.audio.features import AudioFeatures  # noqa: E402
from emo_pipeline.audio.whisper import frame_tokens  # noqa: E402
from emo_pipeline.config import echomimic_v2_acc_config, echomimic_v2_config  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402


def pose_effect(nets, pose_images: torch.Tensor, latent_size: int) -> None:
    """How much the poses weigh: the pose encoder's features against a black frame's, beside the size of the
    denoising UNet's conv_in output (which they are added to) on clamped noise."""
    _, denoising_unet, pose_encoder = nets
    with torch.no_grad():
        features = pose_encoder(pose_images)
        black = pose_encoder(torch.zeros_like(pose_images[:, :, :1]))
        noise = torch.randn(1, 4, 1, latent_size, latent_size, generator=torch.Generator().manual_seed(7))
        conv_in = denoising_unet.conv_in(noise.clamp(-1.5, 1.5))
    drawn = (pose_images.sum(1) > 0).float().mean().item()
    print(f"poses: {drawn:.1%} of the pixels drawn; pose features differ from a black frame's by at most "
          f"{(features - black).abs().max():.3g} (mean over frames of their std across frames "
          f"{features.std(2).mean():.3g}); the denoising UNet's conv_in output has std {conv_in.std():.3g}")


def whole_video(nets, vae, pipe, pixels, poses, features, frames: int, fps: float, steps: int, cfg: float,
                acc: bool, seed: int = 0, extras: bool = True):
    from PIL import Image

    name = "accelerated pipeline" if acc else "standard pipeline"
    tokens = frame_tokens(features, frames, fps).numpy()
    size = pixels.shape[0]
    image, pose_images = Image.fromarray(pixels), poses_tensor(poses)
    run = run_pipeline(nets, vae, image, tokens, pose_images, size, size, steps, cfg, torch.manual_seed(seed),
                       fps=int(fps), acc=acc, reference_bank_dtype=None)
    audio = AudioFeatures(torch.zeros(1), features, frames, fps, 12)
    portrait = pipe.prepare_portrait(torch.from_numpy(pixels).float() / 255)
    options = SamplingOptions(seed=seed, steps=steps, guidance_scale=cfg, frames_per_clip=12, poses=poses)
    ours, latents, our_time = generate_recording_latents(pipe, portrait, audio, options)
    theirs = run.video[0].permute(1, 2, 3, 0)  # [F, H, W, 3]
    lat, lat_rel = relative(latents, run.latents)
    vid, vid_rel = relative(ours, theirs)
    print(f"whole video, EchoMimic v2's {name} ({frames} frames, {len(run.windows[0])} windows, {steps} steps, "
          f"cfg {cfg:g}, timesteps {run.timesteps.tolist()}): final latents max |diff| {lat:.3e}, relative "
          f"{lat_rel:.3e}; frames max |diff| {vid:.3e}, relative {vid_rel:.3e}; EchoMimic v2 {run.seconds:.1f} s, "
          f"ours {our_time:.1f} s")
    if extras and not acc:
        mixed = replace(options, poses=poses.frames_for(list(range(frames))[::-1]))
        _, wrong, seconds = generate_recording_latents(pipe, portrait, audio, mixed)
        lat, lat_rel = relative(wrong, run.latents)
        print(f"  ours with the pose sequence reversed (every frame another frame's hands) against its {name}: final "
              f"latents max |diff| {lat:.3e}, relative {lat_rel:.3e} (what a pose mix-up would show); {seconds:.1f} s")
    if extras:
        rounded = run_pipeline(nets, vae, image, tokens, pose_images, size, size, steps, cfg, torch.manual_seed(seed),
                               fps=int(fps), acc=acc)  # its default: the reference features rounded to fp16
        lat, lat_rel = relative(rounded.latents, run.latents)
        vid, vid_rel = relative(rounded.video, run.video)
        print(f"  its own fp16 reference bank against its fp32 one (the rounding switched off above), {name}: "
              f"final latents max |diff| {lat:.3e}, relative {lat_rel:.3e}; frames max |diff| {vid:.3e}, "
              f"relative {vid_rel:.3e}; {rounded.seconds:.1f} s")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image size (the network is always full size)")
    parser.add_argument("--frames", type=int, default=20, help="video frames (20: three windows, the last wrapping)")
    parser.add_argument("--steps", type=int, default=3, help="steps of the standard pipeline (cfg 2.5)")
    parser.add_argument("--acc-steps", type=int, default=6, help="steps of the accelerated pipeline (its own 6)")
    parser.add_argument("--poses", default="01", help="the checkout's demo pose folder (assets/halfbody_demo/pose/)")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the runs with its fp16 reference bank and ours with the poses reversed")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.environ.get("ECHOMIMIC_V2_PATH"):
        sys.exit("Set ECHOMIMIC_V2_PATH to a checkout of antgroup/echomimic_v2.")
    echo = load_echomimic_v2()
    fps = 24.0
    start = time.perf_counter()
    nets = build_networks(seed=0)
    vae = tiny_vae()
    pipe = our_pipeline(nets, vae, echomimic_v2_config().with_overrides(sample_size=args.size))
    acc = our_pipeline(nets, vae, echomimic_v2_acc_config().with_overrides(sample_size=args.size))
    print(f"EchoMimic v2 at {ECHOMIMIC_V2_COMMIT[:7]} ({echo.path}); full-size networks built and shared in "
          f"{time.perf_counter() - start:.1f} s; fp32, CPU, {torch.get_num_threads()} threads; input {args.size}², "
          f"{args.frames} frames at {fps:g} fps")
    pixels, _, features = inputs(args.size, args.frames, fps)
    poses = demo_poses(echo.path, args.poses, args.frames, args.size)
    pose_effect(nets, poses_tensor(poses), args.size // 8)
    extras = not args.no_extras
    whole_video(nets, vae, pipe, pixels, poses, features, args.frames, fps, args.steps, 2.5, acc=False, extras=extras)
    whole_video(nets, vae, acc, pixels, poses, features, args.frames, fps, args.acc_steps, 1.0, acc=True, extras=extras)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
