"""V-Express's own VExpressPipeline and ours on the same random full-size weights: one short whole video (two
context windows) through both, with the same audio, reference picture, keypoints and seed.

V-Express's networks are built from a checkout named by VEXPRESS_PATH, as its inference.py builds them
(benchmarks/vexpress_reference.py: imported at run time, never copied): the ReferenceNet and the denoising UNet of
the SD1.5 config, the V-Kps guider, the Perceiver audio projection. Every parameter is drawn at random, as
echomimic_reference's harness draws them (N(0, 0.02²), norm scales 1 + N(0, 0.02²), one seeded generator, so the
zero-initialised layers - every denoising attn2.to_out, the motion modules' proj_out, the guider's conv_out - are
non-zero), then the guider's convolution weights at He's scale, as echomimic_v2_reference does for the same
network (at 0.02 the keypoint images would vanish on the way through). Our EMONet of
`vexpress_config().with_overrides(sample_size=SIZE)` takes the very same tensors
(`load_state_dict(strict=True, assign=True)`: one copy of the weights) under our names: reference_net →
reference_unet. (its unused conv_out left out), denoising_unet → denoising_unet., v_kps_guider → face_locator.,
audio_projection → audioproj. Both sides get:

  * the same audio: a random (seeded) 16 kHz waveform of 28,160 samples (1.76 s), which at 25 fps is 44 frames for
    both (V-Express: int(1.76 · 25) = 44 → 2 windows → L = 44 at fps 44 / 1.76 = 25; ours ceil(1.76 · 25) = 44),
    through one shared random full-size wav2vec2 (transformers' Wav2Vec2Model(Wav2Vec2Config()), eval): its
    pipeline with a Wav2Vec2FeatureExtractor(do_normalize=True) as wav2vec2-base-960h's processor, ours through
    emo_pipeline.audio.encoder.AudioEncoder and pipe.encode_audio(waveform, 16000, fps=25);
  * the same reference picture: random pixels already at SIZE (no resize on either side; ours through
    pipe.prepare_portrait without a face crop: V-Express has none);
  * the same keypoints: an eyes-and-nose triangle drifting at random (seeded), drawn on its side by its own
    draw_kps_image (datasets/utils.py with OpenCV, by file path) into L PIL images, on ours handed to the loop as a
    FaceKeypointSequence (SamplingOptions(poses=...)), drawn window by window by our OpenCV-free renderer;
  * the same seed: inference.py reseeds the global CPU generator (torch.manual_seed) and its prepare_latents draws
    torch.randn on the CPU in the pipeline dtype; our loop draws torch.randn from a CPU generator seeded alike;
    both initial noises are compared below;
  * a small random VAE, shared (echomimic_reference.tiny_vae); DDIM of inference_v2.yaml, cfg 3.5, reference /
    audio attention weights 0.95 / 3.0 (its inference.py's defaults, passed to its pipeline as inference.py does).

    VEXPRESS_PATH=/path/to/V-Express PYTHONPATH=/path/to/opencv \\
        python benchmarks/vexpress_side_by_side.py [--steps 3] [--size 64] [--seed 42]

Printed: max |ours - theirs| and relative (max|ours - theirs| / max|theirs|) for the initial noise, the prepared
conditions (reference latents, the guider's keypoint features, the 5 audio tokens per frame, the drawn keypoint
images), the final latents (before decoding) and the decoded frames, both unfiltered (its pipeline returns them
before its median filter) and after the 3×3×3 median filter (its pipelines/utils.py median_filter_3d, loaded by
file path, applied to its frames; ours is part of our loop), and both wall times. fp32 on the CPU. Its
pipelines/utils.py imports imageio_ffmpeg for save_video only: a stand-in module takes its place when the package
is missing (nothing of it is called here).

Results (tencent-ailab/V-Express 6814f7d, engine at b09d9e5; the defaults: 64², 44 frames = 2 windows, 3 steps,
cfg 3.5, seed 42; fp32, 2 threads of this project's shared CPU; torch 2.13, diffusers 0.42.1, transformers 5.25):
  initial noise: its prepare_latents (global generator reseeded with 42, randn in fp32 on the CPU) and our loop's
      torch.randn(generator=Generator("cpu").manual_seed(42)): bitwise equal
  reference latents 1.4e-6, keypoint features 2.4e-6, audio tokens 1.1e-6 relative; keypoint images: 0 of 180,224
      pixels differ (the features differ from a black frame's by up to 0.25, beside the conv_in output's std 0.11)
  final latents:                       max |diff| 2.18e-5, relative 3.3e-6
  frames before the median filter:     max |diff| 1.02e-5 (relative 1.0e-5: frames are in [0, 1])
  frames after the 3x3x3 median filter (its median_filter_3d on its frames; ours in the loop): 1.02e-5
  wall (2 shared cores; two runs): its pipeline 124 s / 159 s, ours 84 s / 124 s (encode_audio + prepare_portrait +
      generate); building the random networks 30 s / 54 s; the script 4-6 min, 10.3 GB resident at most
So the two agree to float32 round-off at every stage: no stage differs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import os
import sys
import time
import types
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import echomimic_reference as er  # noqa: E402
import vexpress_reference as vr  # noqa: E402
from echomimic_v2_reference import redraw_at_he_scale_  # noqa: E402
from reference_common import quiet, relative  # noqa: E402

from emo_pipeline.audio.encoder import AudioEncoder  # noqa: E402
from emo_pipeline.config import vexpress_config  # noqa: E402
from emo_pipeline.models import EMONet  # noqa: E402
from emo_pipeline.pipeline import EMOPipeline  # noqa: E402
from emo_pipeline.poses.face_keypoint_sequence import FaceKeypointSequence  # noqa: E402
from emo_pipeline.sampling.context_windows import FrameAudioTokens  # noqa: E402
from emo_pipeline.sampling.steps import SamplingOptions  # noqa: E402

SAMPLE_RATE = 16000
SAMPLES = 28160  # 1.76 s: 44 frames at 25 fps on both sides (two windows of 24 overlapping by 4)
FPS = 25.0
CONTEXT_FRAMES, CONTEXT_OVERLAP = 24, 4  # inference.py's --context_frames, --context_overlap
REFERENCE_ATTENTION_WEIGHT, AUDIO_ATTENTION_WEIGHT = 0.95, 3.0  # inference.py's defaults
CFG = 3.5
# our names of its four networks (io/loading.py's VEXPRESS_PARTS), and the keys of its that we have no use for
PREFIXES = {"reference_net": "reference_unet.", "denoising_unet": "denoising_unet.", "v_kps_guider": "face_locator.",
            "audio_projection": "audioproj."}
UNUSED = ("reference_net", "conv_out.")


# ------------------------------------------------------------------------------------------------ networks
def build_networks(vx: types.SimpleNamespace, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Its four networks as inference.py builds them, parameters created on meta and then drawn at random
    (echomimic_reference's rule, in the order reference_net, denoising_unet, v_kps_guider, audio_projection), the
    guider's convolutions redrawn at He's scale from a generator seeded with seed + 1."""
    with er._parameters_on_meta():
        nets = vr.build_vexpress_networks(vx, vr.vexpress_settings(vx.path))
    generator = torch.Generator().manual_seed(seed)
    for net in nets.values():
        er._materialize_random_(net, generator, torch.device("cpu"), torch.float32, er.WEIGHT_STD)
    redraw_at_he_scale_(nets["v_kps_guider"], torch.Generator().manual_seed(seed + 1))
    return nets


def our_state_dict(nets: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """One flat state dict in our names (the networks' own tensors, no copies)."""
    flat = {}
    for name, net in nets.items():
        for key, value in net.state_dict().items():
            if (name, key.split(".")[0] + ".") == UNUSED:
                continue
            flat[PREFIXES[name] + key] = value
    return flat


def our_pipeline(nets, vae, wav2vec, size: int) -> EMOPipeline:
    with torch.device("meta"):
        net = EMONet(vexpress_config().with_overrides(sample_size=size))
    net.load_state_dict(our_state_dict(nets), strict=True, assign=True)
    return EMOPipeline(net, vae, AudioEncoder(wav2vec), device="cpu", dtype=torch.float32)


# ------------------------------------------------------------------------------------------------ its code
def load_by_path(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


def its_pipeline_utils(path: Path) -> types.ModuleType:
    """pipelines/utils.py (median_filter_3d), by file path; imageio_ffmpeg (save_video's ffmpeg) stood in for
    when it is not installed."""
    if importlib.util.find_spec("imageio_ffmpeg") is None and "imageio_ffmpeg" not in sys.modules:
        stand_in = types.ModuleType("imageio_ffmpeg")

        def get_ffmpeg_exe():
            raise RuntimeError("imageio_ffmpeg stand-in: save_video is not run by this benchmark")

        stand_in.get_ffmpeg_exe = get_ffmpeg_exe
        sys.modules["imageio_ffmpeg"] = stand_in
    return load_by_path(path / "pipelines" / "utils.py", "vexpress_pipelines_utils")


def its_length(vx, seconds: float, fps: float) -> int:
    """inference.py:255-262: the video cut to 24 + 20k frames."""
    vr.vexpress_pipeline_class(vx)  # imports its `pipelines` package (quietly, no bytecode written)
    context = importlib.import_module("pipelines.context")
    n = context.compute_num_context(int(seconds * fps), CONTEXT_FRAMES, CONTEXT_OVERLAP)
    return context.compute_context_indices(n, CONTEXT_FRAMES, CONTEXT_OVERLAP)[-1][1] + 1


def run_theirs(vx, nets, vae, wav2vec, extractor, image, kps_images, wave, size, length, steps, seed):
    """VExpressPipeline called as inference.py:296-313 calls it (fp32, CPU), with its prepared conditions, initial
    noise and final latents recorded on the instance."""
    from diffusers import DDIMScheduler

    pipeline_class = vr.vexpress_pipeline_class(vx)
    with quiet():
        scheduler = DDIMScheduler(**vr.vexpress_settings(vx.path)["noise_scheduler_kwargs"])
        pipe = pipeline_class(vae=vae, reference_net=nets["reference_net"], denoising_unet=nets["denoising_unet"],
                              v_kps_guider=nets["v_kps_guider"], audio_processor=extractor, audio_encoder=wav2vec,
                              audio_projection=nets["audio_projection"], scheduler=scheduler,
                              ).to(dtype=torch.float32, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    recorded = {}

    def record(name, method):
        def wrapper(*args, **kwargs):
            out = method(*args, **kwargs)
            recorded[name] = out.clone()  # its latents are stepped in place afterwards
            return out
        setattr(pipe, name, wrapper)

    for name in ("prepare_latents", "prepare_audio_embeddings", "prepare_kps_feature", "prepare_reference_latent"):
        record(name, getattr(pipe, name))
    decode = pipe.decode_latents

    def recording_decode(latents):
        recorded["final"] = latents.clone()
        return decode(latents)

    pipe.decode_latents = recording_decode
    generator = torch.manual_seed(seed)  # inference.py:216
    start = time.perf_counter()
    with quiet(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):  # its tqdm bars
        video = pipe(reference_image=image, kps_images=kps_images, audio_waveform=wave, width=size, height=size,
                     video_length=length, num_inference_steps=steps, guidance_scale=CFG,
                     context_frames=CONTEXT_FRAMES, context_overlap=CONTEXT_OVERLAP,
                     reference_attention_weight=REFERENCE_ATTENTION_WEIGHT,
                     audio_attention_weight=AUDIO_ATTENTION_WEIGHT, num_pad_audio_frames=vr.NUM_PAD_AUDIO_FRAMES,
                     generator=generator)
    recorded["seconds"] = time.perf_counter() - start
    recorded["video"] = video  # [1, 3, L, H, W], before its median filter
    recorded["timesteps"] = pipe.scheduler.timesteps.tolist()
    return recorded


# ------------------------------------------------------------------------------------------------ ours
def run_ours(pipe: EMOPipeline, pixels: np.ndarray, wave: torch.Tensor, keypoints: FaceKeypointSequence,
             steps: int, seed: int) -> dict:
    """Our whole video (median-filtered, as the loop yields it), the frames the VAE gave before the filter, the
    final latents [1, 4, F, h, w] and the wall time of encode_audio + prepare_portrait + generate."""
    decoded, latents_seen = [], []
    decode = pipe.decode_latents

    def recording_decode(latents, chunk_size=8):
        latents_seen.append(latents.clone())
        decoded.append(decode(latents, chunk_size))
        return decoded[-1]

    pipe.decode_latents = recording_decode
    try:
        start = time.perf_counter()
        audio = pipe.encode_audio(wave, SAMPLE_RATE, fps=FPS)
        portrait = pipe.prepare_portrait(torch.from_numpy(pixels).float() / 255)
        options = SamplingOptions(poses=keypoints, seed=seed, steps=steps, guidance_scale=CFG,
                                  frames_per_clip=CONTEXT_FRAMES)
        video = pipe.generate(portrait, audio, options)
        seconds = time.perf_counter() - start
    finally:
        pipe.decode_latents = decode
    return {"video": video, "unfiltered": torch.cat(decoded), "audio": audio, "portrait": portrait,
            "final": torch.cat(latents_seen).transpose(0, 1)[None], "seconds": seconds}


# ------------------------------------------------------------------------------------------------ inputs
def make_keypoints(length: int, size: int, seed: int) -> torch.Tensor:
    """float32 [L, 3, 2]: eyes and nose of a face filling the middle of a size² frame, the whole triangle drifting
    by a seeded random walk (about half a pixel a frame at 64²) and each point jittered a little."""
    rng = np.random.default_rng(seed)
    base = np.array([[0.36, 0.42], [0.64, 0.42], [0.50, 0.60]]) * size
    scale = size / 64
    walk = np.cumsum(rng.normal(0, 0.5 * scale, (length, 1, 2)), axis=0)
    jitter = rng.normal(0, 0.3 * scale, (length, 3, 2))
    return torch.from_numpy((base + walk + jitter).astype(np.float32))


def report(label: str, ours: torch.Tensor, theirs: torch.Tensor, lines: list[str]) -> float:
    diff, rel = relative(ours, theirs)
    line = f"{label}: max |diff| {diff:.3e}, relative {rel:.3e} (max |theirs| {theirs.abs().max().item():.3g})"
    print(line, flush=True)
    lines.append(line)
    return rel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help="a V-Express checkout (default: VEXPRESS_PATH)")
    parser.add_argument("--size", type=int, default=64, help="frame size (the networks are always full size)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42, help="the sampling seed (inference.py's --seed default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not (args.reference or os.environ.get("VEXPRESS_PATH")):
        sys.exit("Set VEXPRESS_PATH to a checkout of tencent-ailab/V-Express.")
    from PIL import Image
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path = vr.vexpress_checkout(args.reference)
    vx = vr.import_vexpress(path)
    drawing = vr.kps_drawing_module(path)  # needs OpenCV
    utils = its_pipeline_utils(path)

    start = time.perf_counter()
    nets = build_networks(vx, seed=0)
    vae = er.tiny_vae()
    torch.manual_seed(1)
    with quiet():
        wav2vec = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base-960h's shape, random weights
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    pipe = our_pipeline(nets, vae, wav2vec, args.size)
    count = sum(p.numel() for net in nets.values() for p in net.parameters())
    print(f"V-Express {vr.VEXPRESS_COMMIT[:7]} ({path}); its four networks ({count / 1e9:.2f} G values) built at "
          f"random and shared with ours in {time.perf_counter() - start:.1f} s; fp32, CPU, {torch.get_num_threads()} "
          f"threads; {args.size}², {args.steps} steps, cfg {CFG:g}, seed {args.seed}", flush=True)

    seconds = SAMPLES / SAMPLE_RATE
    length = its_length(vx, seconds, FPS)
    wave = torch.randn(SAMPLES, generator=torch.Generator().manual_seed(3)) * 0.1
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    kps = make_keypoints(length, args.size, seed=5)
    kps_images = [Image.fromarray(drawing.draw_kps_image(args.size, args.size, kps[i])) for i in range(length)]
    keypoints = FaceKeypointSequence(kps, frame_size=args.size, fps=FPS, source="random drift").validate()
    lines: list[str] = []

    with torch.no_grad():
        theirs = run_theirs(vx, nets, vae, wav2vec, extractor, Image.fromarray(pixels), kps_images, wave, args.size,
                            length, args.steps, args.seed)
        print(f"its pipeline: {length} frames ({seconds:g} s at {FPS:g} fps), timesteps {theirs['timesteps']}, "
              f"{theirs['seconds']:.1f} s", flush=True)
        ours = run_ours(pipe, pixels, wave, keypoints, args.steps, args.seed)
        print(f"ours: {ours['audio'].num_frames} frames, {ours['seconds']:.1f} s (audio, portrait and generate)",
              flush=True)
        if ours["audio"].num_frames != length:
            sys.exit(f"frame counts differ: its {length}, ours {ours['audio'].num_frames}")

        # what went in
        noise = theirs["prepare_latents"]
        ours_noise = torch.randn(noise.shape, generator=torch.Generator("cpu").manual_seed(args.seed))
        line = (f"initial noise {tuple(noise.shape)}: its prepare_latents vs our loop's draw: max |diff| "
                f"{(ours_noise - noise).abs().max().item():.1e} (bitwise equal: {torch.equal(ours_noise, noise)})")
        print(line)
        lines.append(line)
        report("reference latents", pipe.encode_images(ours["portrait"].pixels[None]),
               theirs["prepare_reference_latent"], lines)
        drawn = keypoints.tensor_frames(range(length))  # [3, L, S, S] in 0..1
        its_drawn = torch.stack([torch.from_numpy(np.array(im)) for im in kps_images], 1).permute(3, 1, 0, 2)
        wrong = int(((drawn * 255).round().to(torch.uint8) != its_drawn).any(0).sum())
        line = f"keypoint images: {wrong} of {length * args.size ** 2} pixels differ (ours vs its draw_kps_image)"
        print(line)
        lines.append(line)
        from einops import rearrange
        features = pipe.net.face_locator(rearrange(drawn, "c f h w -> f c h w"))
        report("keypoint features (guider)", rearrange(features, "f c h w -> 1 c f h w"),
               theirs["prepare_kps_feature"][1:], lines)
        black = pipe.net.face_locator(torch.zeros_like(drawn[:, :1]).transpose(0, 1))
        conv_in = pipe.net.denoising_unet.conv_in(noise[:, :, 0])
        line = (f"  (the keypoint features differ from a black frame's by up to {(features - black).abs().max():.3g}; "
                f"the denoising UNet's conv_in output they are added to has std {conv_in.std():.3g})")
        print(line)
        lines.append(line)
        tokens = FrameAudioTokens(pipe, ours["audio"]).tokens
        report("audio tokens (resampler output, 5 per frame)", tokens, theirs["prepare_audio_embeddings"][1], lines)

        # what came out
        report("final latents", ours["final"], theirs["final"], lines)
        their_frames = theirs["video"][0]  # [3, L, H, W]
        report("frames before the median filter", ours["unfiltered"].permute(3, 0, 1, 2), their_frames, lines)
        with redirect_stderr(io.StringIO()):
            filtered = utils.median_filter_3d(their_frames, 3, "cpu")
        report("frames after the 3x3x3 median filter", ours["video"].permute(3, 0, 1, 2), filtered, lines)
        line = f"wall: its pipeline {theirs['seconds']:.1f} s, ours {ours['seconds']:.1f} s"
        print(line)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
