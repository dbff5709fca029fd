"""Whole-video sampling in overlapping context windows (EchoMimic's and V-Express's sampling loop).

There are no motion frames: the latents of every frame are denoised together. At each step the
Backbone runs on windows of `size` frames that overlap by `overlap`, wrapping around the end of
the video; the windows move `shift` frames further at every step, so that their seams fall in a
different place each time, and a frame's prediction is the mean over the windows that hold it.
V-Express's windows neither wrap nor move, and its decoded frames go through a 3×3×3 median filter.

Memory: the latents of the whole video (64 KiB per frame at 512², in the compute precision), their running
sum and the scheduler's step over them stay in host memory; each window's latents go to the device for its
Backbone call and its prediction comes back, as do each window's audio tokens (taken from the 50 Hz features) and
pose features; the VAE decodes a chunk of frames at a time. So the device holds one window's work whatever the
audio's length (a 10-minute video at 768² would otherwise add its latents four to nine times over: 4-10 GiB), and
only host memory grows with it, by the latents.
"""

from __future__ import annotations

import inspect
from typing import Iterator

import torch
from einops import rearrange

from ..audio.features import AudioFeatures
from ..audio.token_windows import frame_windows
from ..config import EMOConfig
from ..audio.whisper import frame_tokens
from ..models import BackboneConditions
from ..models.spatial_transformer import ReferenceKV
from ..portrait import Portrait
from ..poses.draw import draw_hands
from ..poses.sequence import PoseError, PoseSequence
from .denoiser import Denoiser
from .median_filter import median_filtered
from .presets import step_plan
from .scheduler_state import restore_scheduler, scheduler_state
from .schedulers import make_scheduler
from .steps import GenerationCancelled, SamplingOptions, SamplingPipeline, StepInfo


def context_windows(num_frames: int, size: int, overlap: int, wrap: bool = True) -> list[list[int]]:
    """EchoMimic's "uniform" schedule (context.py, stride 1, closed loop): windows of `size` frames
    starting every `size - overlap` frames, wrapping past the end; one window when the video is
    no longer than `size`.

    `wrap` False (V-Express's open loop): the windows stop at the last frame, the last one ending there. V-Express
    cuts its videos to 24 + 20k frames, where these are exactly its windows; we keep every frame the audio lasts,
    so a last window that would run past the end starts earlier instead, overlapping its neighbour more."""
    if num_frames <= size:
        return [list(range(num_frames))]
    if wrap:
        return [[i % num_frames for i in range(start, start + size)]
                for start in range(0, num_frames, size - overlap)]
    starts = list(range(0, num_frames - size + 1, size - overlap))
    if starts[-1] + size < num_frames:
        starts.append(num_frames - size)
    return [list(range(start, start + size)) for start in starts]


def shifted(window: list[int], step: int, shift: int, num_frames: int) -> list[int]:
    """The window at denoising step `step` (0-based): every index moved by step·shift, modulo the length."""
    return [(i + step * shift) % num_frames for i in window]


class WindowConditions:
    """What every window shares (the portrait's reference keys/values and face-locator features),
    and the per-window audio tokens and, for EchoMimic v2, pose features: each window's frames are
    drawn and encoded when it runs (the encoder works frame by frame, so this is exact), so a long
    video never holds every frame's pose image or features. Rows are [unconditional, conditional]
    under guidance."""

    def __init__(self, pipe: SamplingPipeline, portrait: Portrait, ref_latent: torch.Tensor, use_cfg: bool,
                 window: int, poses: "PoseSequence | FaceKeypointSequence | None" = None) -> None:
        cfg, net = pipe.config, pipe.net
        self.use_cfg, self.pipe, self.poses = use_cfg, pipe, poses
        rows = 2 if use_cfg else 1
        self.face = None  # pose-driven: each window's own (the loop checks that poses were given)
        if cfg.spec.locator_input == "face_region":
            face = net.face_locator(portrait.face_region[None, : cfg.spec.face_locator_in_channels])
            self.face = self._with_unconditional(face)
        # The ReferenceNet runs once per video; its reference keys/values serve every window and step. V-Express's
        # cross-attention reads one zero token there (its output: attn2's bias, part of every later feature).
        context = None
        if cfg.spec.reference_cross_attention:
            context = torch.zeros(1, 1, cfg.cross_attention_dim, device=ref_latent.device, dtype=ref_latent.dtype)
        with pipe.stage("reference net"):
            features = net.reference_unet(ref_latent, context)
            reference, _ = net.denoising_unet.prepare_reference(features, 1, window, [True])
        reads = [not (use_cfg and cfg.uncond_drops_reference and row == 0) for row in range(rows)]
        sources = tuple(0 if reads[r // window] else None for r in range(rows * window))
        self.reference = [ReferenceKV(kv.key, kv.value, sources) for kv in reference]

    def _with_unconditional(self, features: torch.Tensor) -> torch.Tensor:
        """Guidance's unconditional row first: zero features (EchoMimic v1 and v2), or the same."""
        if not self.use_cfg:
            return features
        uncond = torch.zeros_like(features) if self.pipe.config.uncond_drops_face_region else features
        return torch.cat([uncond, features])

    def pose_features(self, frames: list[int]) -> torch.Tensor:
        """The pose encoder's features of these frames' hand poses (V-Express: face keypoints): [rows, C, F, h, w];
        the unconditional row's are zero. In low-VRAM mode one
        frame at a time (the same features: the encoder works frame by frame), which divides its peak by the
        window's length (its first activation, 16 channels at 768² in fp16: 18.9 MB a frame, 226 MB a window)."""
        if self.pipe.config.spec.locator_input == "poses":
            images = self.poses.tensor_frames(frames, draw_hands)  # [3, F, S, S] in 0..1
        else:  # V-Express: the frames' eyes and nose drawn on black
            images = self.poses.tensor_frames(frames)
        images = rearrange(images, "c f h w -> f c h w").to(self.pipe.device, self.pipe.dtype)
        encoder = self.pipe.net.face_locator
        with self.pipe.stage("pose encoder"):
            if self.pipe.low_vram:
                features = torch.cat([encoder(frame[None]) for frame in images])
            else:
                features = encoder(images)
        return self._with_unconditional(rearrange(features, "f c h w -> 1 c f h w"))

    def __call__(self, tokens: torch.Tensor, frames: list[int] | None = None) -> BackboneConditions:
        """tokens [F, T, C] of the window's frames (any device), and the frames' indices (for their poses) →
        the Backbone's conditions."""
        tokens = tokens.to(self.pipe.device, self.pipe.dtype)[None]
        if self.use_cfg:  # the unconditional row hears nothing (EchoMimic: zero tokens)
            tokens = torch.cat([torch.zeros_like(tokens), tokens])
        face = self.face if self.poses is None or frames is None else self.pose_features(frames)
        return BackboneConditions(
            identity=None, audio=tokens, face_features=face, reference=self.reference,
            audio_heard=(False, True) if self.use_cfg else None,
        )


def check_poses(poses: "PoseSequence | FaceKeypointSequence | None", num_frames: int, size: int, title: str,
                keypoints: bool = False) -> None:
    """A pose-driven family's pose sequence (`keypoints`: V-Express's face keypoints): given, one pose per video
    frame, drawn for this model's size."""
    if poses is None and keypoints:
        raise PoseError(f"{title} draws three face keypoints (eyes and nose) for every frame, and none were given: "
                        "take them from the photo (fix_face: a still head) or from a driving video (EMO Load Face "
                        "Keypoints; --keypoints on the command line).")
    if poses is None:
        raise PoseError(f"{title} is driven by a hand-pose sequence as well as the audio, and none was given: "
                        "pick one of its demo sequences or load poses from keypoints or a video (EMO Load Poses; "
                        "--poses on the command line).")
    if len(poses) != num_frames:
        raise PoseError(f"The pose sequence has {len(poses)} frames for a {num_frames}-frame video: extend it to "
                        "the audio's length first (PoseSequence.extend_to).")
    if poses.frame_size != size:
        raise PoseError(f"The poses are placed in {poses.frame_size}² frames and this model renders {size}²: "
                        "resize them first (PoseSequence.for_frame_size).")


def carry_problem(carry: dict, frames_kept: int, num_frames: int, opts: SamplingOptions,
                  config: EMOConfig | None = None) -> str | None:
    """What is wrong with a saved carry for `frames_kept` decoded frames (None: nothing): the latents of the
    whole video after `step` steps; frames are decoded, and kept, only after the last step. `config`: the model's
    (whether its windows wrap)."""
    step, latents, rng = carry.get("step"), carry.get("latents"), carry.get("rng")
    if type(step) is not int or not 1 <= step <= opts.steps:
        return f"its step {str(step)[:20]} is not one of the {opts.steps} steps"
    if frames_kept and step != opts.steps:
        return f"{frames_kept} frames were kept, but its latents are after step {step} of {opts.steps}"
    wrap = config.spec.context_wraps if config is not None else True
    windows = len(context_windows(num_frames, opts.frames_per_clip, opts.context_overlap, wrap))
    if carry.get("calls") != step * windows:
        return f"it counts {str(carry.get('calls'))[:20]} window calls for {step} steps of {windows} windows"
    if not (isinstance(latents, torch.Tensor) and latents.ndim == 5 and latents.shape[2] == num_frames):
        return f"its latents are not those of a {num_frames}-frame video"
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8) or not isinstance(carry.get("scheduler"), dict):
        return "its random or scheduler state is not one this loop saves"
    return None


def iter_video(pipe: SamplingPipeline, portrait: Portrait, audio: AudioFeatures,
               opts: SamplingOptions) -> Iterator[torch.Tensor]:
    """Denoise the whole video's latents in context windows, then yield its frames chunk by chunk."""
    cfg, spec = pipe.config, pipe.config.spec
    device, dtype = pipe.device, pipe.dtype
    num_frames, size, steps = audio.num_frames, opts.frames_per_clip, opts.steps
    overlap = opts.context_overlap
    if size > cfg.temporal_max_len:
        raise ValueError(f"A context window of {size} frames exceeds {cfg.temporal_max_len}, the longest "
                         "sequence this model's temporal modules know.")
    windows = context_windows(num_frames, size, overlap, spec.context_wraps)
    window = len(windows[0])
    use_cfg = opts.guidance_scale > 1.0
    plan = step_plan(steps, use_cfg, opts.guidance_interval, 1)
    generator = torch.Generator("cpu").manual_seed(int(opts.seed))
    backbone = pipe.backbone

    per_frame = spec.locator_input in ("poses", "face_keypoints")
    poses = opts.poses if per_frame else None
    if per_frame:
        check_poses(poses, num_frames, cfg.sample_size, spec.title, keypoints=spec.locator_input == "face_keypoints")
    portrait = portrait.to(device, dtype)
    ref_latent = pipe.encode_images(portrait.pixels[None])
    conditions = WindowConditions(pipe, portrait, ref_latent, use_cfg, window, poses)
    frame_audio = FrameAudioTokens(pipe, audio)

    shape = (1, cfg.latent_channels, num_frames, ref_latent.shape[-2], ref_latent.shape[-1])
    latents = torch.randn(shape, generator=generator, dtype=dtype)
    if spec.noise_clamp is not None:
        latents = latents.clamp(-spec.noise_clamp, spec.noise_clamp)
    store = torch.device("cpu")  # where the whole video's latents live (see the module's note)
    scheduler = make_scheduler(opts.scheduler, cfg.scheduler)
    scheduler.set_timesteps(steps, device=store)
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    latents = latents * scheduler.init_noise_sigma
    calls, total_calls = 0, steps * len(windows)
    first_step, checkpoint = 0, opts.checkpoint
    carry = checkpoint.restore() if checkpoint is not None else None
    if carry is not None:  # continue after the last kept step, exactly as if never stopped
        first_step, calls, latents = carry["step"], carry["calls"], carry["latents"].to(store)
        restore_scheduler(scheduler, carry["scheduler"], store)
        generator.set_state(carry["rng"])
    for step, (t, (guided, _)) in enumerate(zip(scheduler.timesteps, plan)):
        if step < first_step:
            continue
        total = torch.zeros_like(latents)
        count = torch.zeros(num_frames, dtype=latents.dtype)
        model_input = scheduler.scale_model_input(latents, t)
        t_device = t.to(device)
        for w, frames in enumerate(windows):
            if opts.callbacks.is_cancelled and opts.callbacks.is_cancelled():
                raise GenerationCancelled()
            moved = shifted(frames, step, spec.context_shift, num_frames)
            index = torch.tensor(moved)
            denoise = Denoiser(backbone, conditions(frame_audio(index), moved), use_cfg, opts.guidance_scale,
                               pipe.low_vram, None)
            with pipe.stage("denoising"):
                window_input = model_input.index_select(2, index).to(device)
                predicted = denoise(window_input, t_device, guided, False)
                total.index_add_(2, index, predicted.to(store, total.dtype))
            count.index_add_(0, index, torch.ones_like(index, dtype=count.dtype))
            calls += 1
            if opts.callbacks.on_step and w < len(windows) - 1:
                opts.callbacks.on_step(StepInfo(calls, total_calls, w, len(windows), int(t), "window"))
        out = scheduler.step(total / count.view(1, 1, -1, 1, 1), t, latents, **step_kwargs)
        latents = out.prev_sample
        if opts.callbacks.on_preview:
            estimate = getattr(out, "pred_original_sample", None)
            opts.callbacks.on_preview(estimate if estimate is not None else latents)
        if checkpoint is not None and (checkpoint.due(step + 1) or step + 1 == steps):
            checkpoint.save({"step": step + 1, "calls": calls, "latents": latents, "rng": generator.get_state(),
                             "scheduler": scheduler_state(scheduler)})
        if opts.callbacks.on_step:
            opts.callbacks.on_step(StepInfo(calls, total_calls, len(windows) - 1, len(windows), int(t), "window"))
    total = count = conditions = frame_audio = None  # free them before decoding
    chunk = 1 if pipe.low_vram else opts.decode_chunk_size
    flat = latents[0].transpose(0, 1)  # [T, 4, h, w]
    decoded = checkpoint.frames_done if carry is not None else 0  # frames the caller already has

    def decode(start: int, end: int) -> torch.Tensor:
        with pipe.stage("vae decode"):
            return pipe.decode_latents(flat[start:end], chunk)

    chunks = (decode(start, start + chunk) for start in range(decoded, num_frames, chunk))
    if spec.median_filter:  # V-Express: a frame needs its neighbours (a resumed render decodes the one before)
        yield from median_filtered(chunks, decode(decoded - 1, decoded)[0] if decoded else None)
    else:
        yield from chunks


class FrameAudioTokens:
    """Each window's cross-attention tokens [F, T, C] (on the CPU): EchoMimic's whisper layers around each frame as
    they are, or V-Express's ten wav2vec2 tokens around each frame through its Perceiver resampler. The resampler
    runs once per video, before the first step (its rows are independent), and its tokens stay in host memory
    (7.7 KB a frame in fp16): every step reads them again."""

    def __init__(self, pipe: SamplingPipeline, audio: AudioFeatures) -> None:
        self.pipe, self.audio, self.tokens = pipe, audio, None
        cfg = pipe.config
        if cfg.spec.audio_framing == "token_windows":
            resampler, rows = pipe.net.audioproj, 256
            parts = []
            with pipe.stage("audio projection"):
                for start in range(0, audio.num_frames, rows):
                    index = torch.arange(start, min(start + rows, audio.num_frames))
                    windows = frame_windows(audio.features, index, context=cfg.audio_context)
                    parts.append(resampler(windows.to(pipe.device, pipe.dtype)).cpu())
            self.tokens = torch.cat(parts)

    def __call__(self, index: torch.Tensor) -> torch.Tensor:
        if self.tokens is not None:
            return self.tokens.index_select(0, index)
        cfg = self.pipe.config
        return frame_tokens(self.audio.features, index, self.audio.fps).view(len(index), cfg.audio_tokens, -1)
