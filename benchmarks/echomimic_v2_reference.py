"""EchoMimic v2's own networks and pipelines, as the reference side of its parity benchmark
(benchmarks/echomimic_v2_side_by_side.py) and of its key list (tests/make_echomimic_keys.py --v2).

Nothing of EchoMimic v2 is copied here: its code is imported at run time from a checkout of
antgroup/echomimic_v2 named by the ECHOMIMIC_V2_PATH environment variable (or the `path` arguments),
written against commit a312dec05ec7f9b3e0e2c2802e4a1a5d3788cfb3. Like v1's it needs `einops` and
`omegaconf`; whisper, decord, moviepy and OpenCV are not needed (the caller gives the whisper tokens and
the pose images, drawn by our emo_pipeline/poses/draw.py, whose own parity with the reference's OpenCV
drawing is benchmarks/echomimic_v2_pose_drawing.py).

It runs through echomimic_reference.py's harness, with `V2` naming what differs from v1: the same
import-time shims (harmless here: v2's unet_2d_condition.py, transformer_2d.py and unet_2d_blocks.py
already import today's diffusers names), the same device patch of ReferenceAttentionControl
(mutual_self_attention.py:64 has the same `device=torch.device("cuda")` default), the same fp16 default
of its update (:274, :311-313) switchable per call, the same audio-guider stand-in, the same random
full-size weights. See that file's docstring for each.

    load_echomimic_v2(path)          v2's classes, imported with the shims
    build_networks(device, dtype, seed)  (reference_unet, denoising_unet, pose_encoder), full size,
                                     random weights, built as infer.py builds them (below)
    poses_tensor(poses)              a PoseSequence's pose images as infer.py hands them to the pipeline
    run_pipeline(nets, vae, ...)     v2's own EchoMimicV2Pipeline (or the _acc one's) on given whisper
                                     tokens and pose images; returns the video and the final latents

    ECHOMIMIC_V2_PATH=/path/to/echomimic_v2 PYTHONPATH=/path/to/einops+omegaconf \\
        python benchmarks/echomimic_v2_reference.py      # end-to-end smoke run, 64x64, 5 frames

Networks (infer.py:89-120; infer_acc.py builds the same with the _acc files): the reference UNet is
src/models/unet_2d_condition.UNet2DConditionModel of sd-image-variations-diffusers' UNet config, the
denoising UNet `EMOUNet3DConditionModel.from_pretrained_2d(base, motion_module_path, subfolder="unet",
unet_additional_kwargs=<configs/inference/inference_v2.yaml>)` (src/models/unet_3d_emo.py, v1's
unet_3d_echo.py renamed), the pose encoder `PoseEncoder(320, conditioning_channels=3,
block_out_channels=(16, 32, 96, 256))` (src/models/pose_encoder.py, v1's FaceLocator renamed). The
weights: every parameter N(0, 0.02²) (norm scales 1 + N(0, 0.02²)) as v1's harness draws them, then the
pose encoder's eight convolution weights redrawn at He's scale, N(0, 2 / fan_in) (`pose_std="he"`):
at 0.02 its convolutions shrink a pose image to nothing (on the first 20 frames of demo sequence 01 at
64², the features differ from those of a black frame by about 1e-6, against biases of 0.02), so the
check would not see the poses at all; at He's scale by up to 0.08, the size of what they are added to
(the denoising UNet's conv_in output, std 0.09), as the side-by-side script prints.

What v2's pipelines do (P = src/pipelines/pipeline_echomimicv2.py, PA = pipeline_echomimicv2_acc.py,
line numbers at a312dec), where they differ from v1's:

1. Initial noise: prepare_latents_smooth (P:213-253): randn_tensor of [1, 4, F, H/8, W/8] in the
   VAE's dtype on the generator's device, clamped to ±1.5, times init_noise_sigma (1 for DDIM).
2. Pose features: `self.pose_encoder(poses_tensor)` once on all F frames (P:489), sliced per window
   with the window's shifted frames (P:573-574); the unconditional row gets zeros. Added after the
   denoising UNet's conv_in (unet_3d_emo.py:483-486).
3. Windows: its context scheduler once at step 0, each index moved by 3 * t_i (P:561; v1: 2 * t_i).
4. Reference bank: the standard pipeline duplicates it for guidance whatever the guidance
   (`update(..., do_classifier_free_guidance=True)`, P:543), so it only runs with cfg > 1; the acc
   one passes its own flag (PA:434).
5. Without guidance the standard pipeline sums the windows' predictions (no division by the counter,
   P:595-599); the acc one divides (PA:495-496). With guidance both average, then guide.
6. The acc pipeline maps each window's v-prediction to x0 and back (PA:481-483, step_func.py):
   algebraically the identity, float rounding only.
7. Decoding as v1: latents / 0.18215, one frame per vae.decode, (x / 2 + 0.5).clamp(0, 1).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import echomimic_reference as er  # noqa: E402

ECHOMIMIC_V2_COMMIT = "a312dec05ec7f9b3e0e2c2802e4a1a5d3788cfb3"
# infer.py:117: PoseEncoder(320, conditioning_channels=3, block_out_channels=(16, 32, 96, 256))
POSE_ENCODER_ARGS = dict(conditioning_embedding_channels=320, conditioning_channels=3,
                         block_out_channels=(16, 32, 96, 256))
POSE_FOLDER = Path("assets/halfbody_demo/pose")  # the checkout's demo pose sequences

V2 = er.Version(
    name="EchoMimic v2", repository="antgroup/echomimic_v2", commit=ECHOMIMIC_V2_COMMIT,
    variable="ECHOMIMIC_V2_PATH", script="infer.py", unet_3d=("models.unet_3d_emo", "EMOUNet3DConditionModel"),
    locator=("models.pose_encoder", "PoseEncoder"), locator_args=tuple(POSE_ENCODER_ARGS.items()),
    locator_name="pose_encoder",
    pipelines=("pipelines.pipeline_echomimicv2", "pipelines.pipeline_echomimicv2_acc"),
    pipeline_class="EchoMimicV2Pipeline", prepare_latents="prepare_latents_smooth", shift=3,
)


def load_echomimic_v2(path: str | os.PathLike | None = None) -> types.SimpleNamespace:
    """v2's classes and pipeline modules from the checkout at `path` (default ECHOMIMIC_V2_PATH)."""
    return er.load_echomimic(path, V2)


@torch.no_grad()
def redraw_at_he_scale_(net: nn.Module, generator: torch.Generator) -> None:
    """Every convolution weight of `net` drawn again from N(0, 2 / fan_in) (He's initialisation), in module
    order, in place (fp32 draw, then cast); biases are kept."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):  # InflatedConv3d is an nn.Conv2d
            weight = module.weight
            std = math.sqrt(2.0 / weight[0].numel())
            weight.copy_(torch.randn(weight.shape, generator=generator, dtype=torch.float32) * std)


def build_networks(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0,
                   path: str | os.PathLike | None = None, std: float = er.WEIGHT_STD, pose_std: str = "he",
                   ) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(reference_unet, denoising_unet, pose_encoder) at full size with random weights: echomimic_reference's
    build_networks for V2 (every parameter N(0, std²), norm scales 1 + N(0, std²), one generator seeded with
    `seed`), then, with pose_std="he", the pose encoder's convolution weights from N(0, 2 / fan_in) drawn from
    a generator seeded with seed + 1 (see the module docstring); pose_std="std" keeps them at `std`."""
    if pose_std not in ("he", "std"):
        raise ValueError(f"pose_std must be 'he' or 'std', not {pose_std!r}")
    nets = er.build_networks(device, dtype, seed, path, std, version=V2)
    if pose_std == "he":
        redraw_at_he_scale_(nets[2], torch.Generator().manual_seed(seed + 1))
    return nets


def poses_tensor(poses) -> torch.Tensor:
    """A PoseSequence's frames as infer.py hands them to the pipeline: [1, 3, F, S, S] float32 in [0, 1], RGB,
    each frame's hands drawn at the area's size and pasted into a black S² frame (drawn by our
    emo_pipeline.poses.draw.draw_hands, the images our sampling loop draws for its windows)."""
    from emo_pipeline.poses.draw import draw_hands

    return poses.tensor_frames(range(len(poses)), draw_hands)[None]


def demo_poses(checkout: str | os.PathLike, name: str, frames: int, size: int):
    """The checkout's demo pose sequence `name` (assets/halfbody_demo/pose/<name>, read by our
    load_pose_folder without running its pickles), its first `frames` frames (ping-pong extended if it is
    shorter), placed for size² frames."""
    from emo_pipeline.poses.demo_files import load_pose_folder

    poses = load_pose_folder(Path(checkout) / POSE_FOLDER / name, source=f"demo poses {name}")
    return poses.extend_to(frames)[0].for_frame_size(size)


def run_pipeline(nets, vae, ref_image_pil, whisper_chunks, poses: torch.Tensor, width: int, height: int, steps: int,
                 cfg: float, generator: torch.Generator | None, **kwargs) -> er.EchoMimicRun:
    """v2's own EchoMimicV2Pipeline (pipeline_echomimicv2_acc's with acc=True), called as infer.py calls it
    (context_frames 12, context_overlap 3, fps 24 unless given), on whisper tokens [F, 50, 384] and poses
    [1, 3, F, H, W]: echomimic_reference.run_pipeline with V2 (its keywords: acc, video_length,
    reference_bank_dtype (fp16 by default, as v2 does; None keeps the network's dtype), path, verbose)."""
    return er.run_pipeline(nets, vae, ref_image_pil, whisper_chunks, poses, width, height, steps, cfg, generator,
                           version=V2, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--cfg", type=float, default=2.5)
    parser.add_argument("--acc", action="store_true")
    parser.add_argument("--poses", default="01", help="a demo pose folder of the checkout")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    echo = load_echomimic_v2()
    start = time.perf_counter()
    nets = build_networks(seed=0)
    print(f"networks built in {time.perf_counter() - start:.1f} s:",
          ", ".join(f"{n} {sum(p.numel() for p in net.parameters()) / 1e6:.1f}M"
                    for n, net in zip(V2.network_names, nets)))
    vae = er.tiny_vae()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    chunks = rng.standard_normal((args.frames, 50, 384)).astype(np.float32)
    poses = poses_tensor(demo_poses(echo.path, args.poses, args.frames, args.size))
    run = run_pipeline(nets, vae, image, chunks, poses, args.size, args.size, args.steps, args.cfg,
                       torch.Generator().manual_seed(0), acc=args.acc)
    print(f"video {tuple(run.video.shape)} {run.video.dtype}, latents {tuple(run.latents.shape)}, "
          f"initial latents {tuple(run.initial_latents.shape)} (|max| {run.initial_latents.abs().max():.3f})")
    print(f"timesteps {run.timesteps.tolist()}, windows per step {run.windows}")
    print(f"final latents: mean {run.latents.mean():.4f} std {run.latents.std():.4f}, finite "
          f"{bool(torch.isfinite(run.latents).all())}; pipeline wall time {run.seconds:.1f} s")


if __name__ == "__main__":
    main()
