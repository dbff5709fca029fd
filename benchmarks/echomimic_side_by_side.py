"""EchoMimic's own code and ours on the same random full-size weights: one guided denoising forward,
and short whole videos through EchoMimic's own pipeline (standard and accelerated) vs ours.

EchoMimic's networks are built from a checkout named by ECHOMIMIC_PATH, as its infer_audio2vid.py
builds them (benchmarks/echomimic_reference.py: imports at run time, never copied), with every
parameter drawn at random (zero-initialised layers included). Our EMONet of the full-size
`echomimic` config takes the very same tensors (`load_state_dict(strict=True, assign=True)`: one
copy of the weights). Both sides get the same inputs: the portrait's pixels, the face mask, the
audio tokens (ours taken from random 50 Hz whisper features by our `frame_tokens`, handed to
EchoMimic's pipeline through a stand-in audio guider) and the same seed (both draw the initial
noise with torch.randn on a CPU generator, then clamp it to ±1.5). A small random VAE is shared.

    ECHOMIMIC_PATH=/path/to/echomimic PYTHONPATH=/path/to/einops+omegaconf \\
        python benchmarks/echomimic_side_by_side.py                 # 64², 14 frames (2 windows), 3 steps

Printed: max |ours - theirs| and the relative difference max|ours - theirs| / max|theirs| of the
guided prediction, of the final latents and of the decoded frames, plus both wall times. fp32 on
the CPU; EchoMimic rounds its reference features to fp16 even in fp32 (ReferenceAttentionControl's
update default), which is switched off here (`reference_bank_dtype=None`) so that both sides
compute in fp32; its effect alone is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from echomimic_reference import build_networks, load_echomimic, run_pipeline, state_dicts, tiny_vae  # noqa: E402
from reference_common import relative  # noqa: E402

from emo_pipeline.audio.features import AudioFeatures  # noqa: E402
from emo_pipeline.audio.whisper import frame_tokens  # noqa: E402
from emo_pipeline.config import echomimic_acc_config, echomimic_config  # noqa: E402
from emo_pipeline.models import EMONet  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.sampling.context_windows import WindowConditions  # noqa: E402
from emo_pipeline.sampling.denoiser import Denoiser  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402
from emo_pipeline.tiny import tiny_whisper  # noqa: E402


def our_pipeline(nets, vae, config) -> EMOPipeline:
    with torch.device("meta"):
        net = EMONet(config)
    net.load_state_dict(state_dicts(*nets), strict=True, assign=True)
    return EMOPipeline(net, vae, tiny_whisper(), device="cpu", dtype=torch.float32)


def inputs(size: int, frames: int, fps: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    mask = torch.zeros(size, size)
    mask[size // 4: 3 * size // 4, size // 5: 4 * size // 5] = 1
    features = torch.from_numpy(rng.standard_normal((int(frames * 50 / fps) + 6, 5, 384)).astype(np.float32))
    return pixels, mask, features


def our_portrait(pipe: EMOPipeline, pixels: np.ndarray, mask: torch.Tensor):
    portrait = pipe.prepare_portrait(torch.from_numpy(pixels).float() / 255)
    portrait.face_region = mask.expand(3, -1, -1).clone()  # the very mask EchoMimic gets
    return portrait


def one_forward(echo, nets, pipe, pixels, mask, tokens, t: int, cfg: float) -> None:
    """One guided denoising forward over a window of the given frames, both sides."""
    reference_unet, denoising_unet, face_locator = nets
    f = tokens.shape[0]
    latents = torch.randn(1, 4, f, pixels.shape[0] // 8, pixels.shape[1] // 8, generator=torch.Generator().manual_seed(5))
    timestep = torch.tensor(t)
    portrait = our_portrait(pipe, pixels, mask)
    ref_latent = pipe.encode_images(portrait.pixels[None])

    with torch.no_grad():
        start = time.perf_counter()
        writer = echo.ReferenceAttentionControl(reference_unet, do_classifier_free_guidance=True, mode="write",
                                                batch_size=1, fusion_blocks="full")
        reader = echo.ReferenceAttentionControl(denoising_unet, do_classifier_free_guidance=True, mode="read",
                                                batch_size=1, fusion_blocks="full")
        reference_unet(ref_latent, torch.zeros_like(timestep), encoder_hidden_states=None, return_dict=False)
        reader.update(writer, do_classifier_free_guidance=True, dtype=torch.float32)
        face = face_locator(mask[None, None, None])
        pred = denoising_unet(latents.repeat(2, 1, 1, 1, 1), timestep, encoder_hidden_states=None,
                              audio_cond_fea=torch.cat([torch.zeros_like(tokens[None]), tokens[None]]),
                              face_musk_fea=torch.cat([torch.zeros_like(face), face]), return_dict=False)[0]
        uncond, cond = pred.chunk(2)
        theirs = uncond + cfg * (cond - uncond)
        reader.clear(), writer.clear()
        their_time = time.perf_counter() - start

        start = time.perf_counter()
        conditions = WindowConditions(pipe, portrait, ref_latent, True, f)
        denoise = Denoiser(pipe.net.denoising_unet, conditions(tokens), True, cfg, False, None)
        ours = denoise(latents, timestep, True, False)
        our_time = time.perf_counter() - start
    diff, rel = relative(ours, theirs)
    print(f"one guided forward (t={t}, {f} frames, cfg {cfg:g}): max |diff| {diff:.3e}, relative {rel:.3e}; "
          f"EchoMimic {their_time:.1f} s, ours {our_time:.1f} s")


def generate_recording_latents(pipe: EMOPipeline, portrait, audio: AudioFeatures, options: SamplingOptions,
                               ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Our whole video [F, H, W, 3], its final latents [1, 4, F, h, w] (what the loop hands to the VAE) and the
    wall time of `generate`."""
    recorded = []
    decode = pipe.decode_latents

    def recording_decode(latents, chunk_size=8):
        recorded.append(latents)
        return decode(latents, chunk_size)

    pipe.decode_latents = recording_decode
    try:
        start = time.perf_counter()
        video = pipe.generate(portrait, audio, options)
        seconds = time.perf_counter() - start
    finally:
        pipe.decode_latents = decode
    return video, torch.cat(recorded).transpose(0, 1)[None], seconds


def whole_video(nets, vae, pipe, pixels, mask, features, frames: int, fps: float, steps: int, cfg: float,
                acc: bool, seed: int = 0) -> None:
    from PIL import Image

    tokens = frame_tokens(features, frames, fps)
    size = pixels.shape[0]
    run = run_pipeline(nets, vae, Image.fromarray(pixels), tokens.numpy(), mask, size, size, steps, cfg,
                       torch.manual_seed(seed), fps=int(fps), acc=acc, reference_bank_dtype=None)
    audio = AudioFeatures(torch.zeros(1), features, frames, fps, 12)
    ours, latents, our_time = generate_recording_latents(
        pipe, our_portrait(pipe, pixels, mask), audio, SamplingOptions(seed=seed, steps=steps, guidance_scale=cfg))
    name = "accelerated pipeline" if acc else "standard pipeline"
    lat, lat_rel = relative(latents, run.latents)
    vid, vid_rel = relative(ours, run.video[0].permute(1, 2, 3, 0))
    print(f"whole video, EchoMimic's {name} ({frames} frames, {len(run.windows[0])} windows, {steps} steps, "
          f"cfg {cfg:g}): final latents max |diff| {lat:.3e}, relative {lat_rel:.3e}; frames max |diff| {vid:.3e}, "
          f"relative {vid_rel:.3e}; EchoMimic {run.seconds:.1f} s, ours {our_time:.1f} s")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image size (the network is always full size)")
    parser.add_argument("--frames", type=int, default=14, help="video frames (14: two windows, one wrapping)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.environ.get("ECHOMIMIC_PATH"):
        sys.exit("Set ECHOMIMIC_PATH to a checkout of antgroup/echomimic.")
    echo = load_echomimic()
    fps = 24.0
    start = time.perf_counter()
    nets = build_networks(seed=0)
    vae = tiny_vae()
    pipe = our_pipeline(nets, vae, echomimic_config().with_overrides(sample_size=args.size))
    print(f"full-size networks built and shared in {time.perf_counter() - start:.1f} s; fp32, CPU, "
          f"{torch.get_num_threads()} threads; input {args.size}², {args.frames} frames at {fps:g} fps")
    pixels, mask, features = inputs(args.size, args.frames, fps)
    with torch.no_grad():
        window = frame_tokens(features, min(args.frames, 12), fps)
    one_forward(echo, nets, pipe, pixels, mask, window, 999, 2.5)
    one_forward(echo, nets, pipe, pixels, mask, window, 499, 2.5)
    whole_video(nets, vae, pipe, pixels, mask, features, args.frames, fps, args.steps, 2.5, acc=False)
    acc = our_pipeline(nets, vae, echomimic_acc_config().with_overrides(sample_size=args.size))
    whole_video(nets, vae, acc, pixels, mask, features, args.frames, fps, 2, 1.0, acc=True)


if __name__ == "__main__":
    main()
