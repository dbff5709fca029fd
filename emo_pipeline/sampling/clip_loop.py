"""Clip after clip (EMO, Hallo, Hallo2, MEMO): each clip of f frames is denoised on its own with
classifier-free guidance and decoded in chunks, and its frames are handed out before the next clip
starts. The next clip continues from the last n frames made; how they reach it is the family's
conditions: joined to each temporal module's frame sequence (motion_frames.py) or added to MEMO's
memory of the whole past (memo_memory.py). This module is what both loops share: the loop itself and
the conditions every clip reads."""

from __future__ import annotations

import inspect
from typing import Any, Iterator, Sequence

import torch

from ..audio.features import AudioFeatures
from ..families import EMOTIONS, emotion_label
from ..models import BackboneConditions
from ..models.deep_cache import DeepFeatureCache
from ..models.frame_windows import frame_windows
from ..portrait import Portrait
from .denoiser import Denoiser
from .presets import step_plan
from .schedulers import make_scheduler
from .steps import GenerationCancelled, SamplingOptions, SamplingPipeline, StepInfo


def clip_emotion(emotion: "str | Sequence[str] | None", clip: int) -> str:
    """The emotion of clip `clip`: the whole video's, or its own of a per-clip list (MEMO's detected ones)."""
    if emotion is None or isinstance(emotion, str):
        return emotion or "neutral"
    if clip >= len(emotion):
        raise ValueError(f"{len(emotion)} emotions were given for the clips of this video, and clip {clip + 1} has "
                         "none: give one per clip (detect them from this audio), or one for the whole video.")
    return emotion[clip]


class ClipConditions:
    """Everything the Backbone reads for one clip: ReferenceNet features of the portrait and the motion
    frames, the clip's audio tokens, masks, identity, face region and speed; for MEMO the temporal memory
    and the emotion label. Rows are [unconditional, conditional] under guidance, else [conditional]. The
    identity tokens and face-locator features are made once, here; `reference_features` is the family's."""

    def __init__(self, pipe: SamplingPipeline, portrait: Portrait, ref_latent: torch.Tensor, opts: SamplingOptions,
                 use_cfg: bool) -> None:
        self.pipe, self.portrait, self.ref_latent, self.opts, self.use_cfg = pipe, portrait, ref_latent, opts, use_cfg
        cfg, net = pipe.config, pipe.net
        identity = net.imageproj(portrait.identity[None])
        face = net.face_locator(portrait.face_region[None]) if net.face_locator is not None else None
        if use_cfg:
            # Hallo's unconditional identity is the projection of a zero embedding, not zero tokens.
            uncond_identity = net.imageproj(torch.zeros_like(portrait.identity[None])) \
                if cfg.uncond_drops_identity else identity
            uncond_face = torch.zeros_like(face) if cfg.uncond_drops_face_region and face is not None else face
            identity = torch.cat([uncond_identity, identity])
            face = torch.cat([uncond_face, face]) if face is not None else None
        self.identity, self.face = identity, face

    def __call__(self, audio: AudioFeatures, clip: int, previous: torch.Tensor | None, generator: torch.Generator,
                 memory: Any = None) -> BackboneConditions:
        """The conditions of clip `clip`; `previous`: the last frames made [n, H, W, 3] in 0..1 (None before the
        first clip); `memory`: MEMO's memory before this clip (the result carries the one after it)."""
        pipe, opts, use_cfg = self.pipe, self.opts, self.use_cfg
        cfg, net = pipe.config, pipe.net
        f = opts.frames_per_clip
        with pipe.stage("reference net"):
            reference, motion, memory = self.reference_features(previous, generator, memory)
        emotion = None
        if cfg.spec.audio_route == "joint_audio":
            label = emotion_label(clip_emotion(opts.emotion, clip))
            # the unconditional row has no emotion: the label after the last class
            emotion = torch.tensor([len(EMOTIONS), label] if use_cfg else [label], device=pipe.device)
        windows = frame_windows(audio.features[None], cfg.audio_context, clip * f, (clip + 1) * f)
        audio_tokens = net.audioproj(windows.to(pipe.device, pipe.dtype))
        if use_cfg:  # the unconditional item hears nothing (Hallo: zero tokens)
            audio_tokens = torch.cat([torch.zeros_like(audio_tokens), audio_tokens])
        return BackboneConditions(
            identity=self.identity, audio=audio_tokens, face_features=self.face,
            reference=reference, motion=motion, masks=self.portrait.masks,
            region_weights=tuple(opts.region_weights),
            speed=self.speed_embedding(clip),
            audio_heard=(False, True) if use_cfg else None,
            emotion=emotion,
            memory=memory,
        )

    def reference_features(self, previous: torch.Tensor | None, generator: torch.Generator,
                           memory: Any = None) -> tuple[list, Any, Any]:
        """(reference keys/values, motion-frame features or None, memory after this clip or None)."""
        raise NotImplementedError

    def reference_input(self, previous: torch.Tensor | None,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[bool], bool]:
        """The ReferenceNet's input for every batch row: (latents of [portrait, motion frames] per row, their
        identity tokens, which rows read the reference, whether the motion frames are zero feature maps)."""
        pipe, portrait, ref_latent, n = self.pipe, self.portrait, self.ref_latent, self.opts.motion_frames
        cfg = pipe.config
        rows = self.identity.shape[0]
        zero_motion = False
        motion_pixels = None  # [n, 3, S, S] in [-1, 1]
        if n > 0 and previous is not None:
            motion_pixels = previous[-n:].permute(0, 3, 1, 2).to(pipe.device, pipe.dtype) * 2 - 1
            if len(motion_pixels) < n and cfg.first_clip_motion == "reference":
                # clips shorter than n: the portrait stands in for frames not made yet, as in clip 1
                fill = portrait.pixels[None].expand(n - len(motion_pixels), -1, -1, -1)
                motion_pixels = torch.cat([fill, motion_pixels])
        elif n > 0 and cfg.first_clip_motion == "reference":
            motion_pixels = portrait.pixels[None].expand(n, -1, -1, -1)
        elif n > 0:  # EMO: the first clip's motion frames are zero feature maps
            zero_motion = True
        if motion_pixels is None:
            latents = ref_latent
        elif cfg.motion_frame_mask_rate > 0:
            # Hallo2: drop random pixels of the motion frames (never inside the face region), with
            # the sampling generator drawn before the clip's noise, as Hallo2 draws them.
            height, width = motion_pixels.shape[-2:]
            keep = torch.rand(height, width, generator=generator) > cfg.motion_frame_mask_rate
            keep = keep.to(pipe.device) | portrait.face_region.bool()
            latents = torch.cat([ref_latent, pipe.encode_images(motion_pixels * keep)])
        elif previous is None:
            latents = ref_latent.repeat(1 + n, 1, 1, 1)  # the portrait encodes to the same latent each time
        else:
            latents = torch.cat([ref_latent, pipe.encode_images(motion_pixels)])
        per_row = latents.shape[0]
        latents = latents.repeat(rows, 1, 1, 1)
        # Hallo pairs ReferenceNet rows with identity tokens cyclically ([u, c, u, c, ...]).
        context = self.identity.repeat(per_row, 1, 1)
        use_reference = [not (self.use_cfg and cfg.uncond_drops_reference and row == 0) for row in range(rows)]
        return latents, context, use_reference, zero_motion

    def speed_embedding(self, clip: int) -> torch.Tensor | None:
        """Speed embeddings [rows, f, C] for one clip; head_speed is constant or one value per frame."""
        head_speed, f, rows = self.opts.head_speed, self.opts.frames_per_clip, self.identity.shape[0]
        encoder = self.pipe.net.speed_encoder
        if encoder is None:
            if head_speed is not None:
                raise ValueError("This model has no speed layers (Hallo weights); leave head_speed unset.")
            return None
        speed = torch.as_tensor(0.0 if head_speed is None else head_speed, dtype=torch.float32).flatten()
        index = torch.arange(clip * f, (clip + 1) * f).clamp(max=speed.numel() - 1)
        return encoder(speed[index].to(self.pipe.device)[None].expand(rows, -1))

    @staticmethod
    def carry(memory: Any) -> Any:
        """What of `memory` a resumable render keeps after a clip (plain tensors)."""
        return None

    @staticmethod
    def restore(kept: Any, device: torch.device) -> Any:
        """The memory `carry` kept, back on the device."""
        return None


def carry_problem(carry: dict, frames_kept: int, num_frames: int, opts: SamplingOptions,
                  config: object = None) -> str | None:
    """What is wrong with a saved carry for `frames_kept` frames of a `num_frames` video (None: nothing): it
    must continue exactly after the clips whose frames were kept."""
    f, steps = opts.frames_per_clip, opts.steps
    clip, done, rng = carry.get("clip"), carry.get("done_steps"), carry.get("rng")
    if type(clip) is not int or not 1 <= clip <= -(-num_frames // f):
        return f"its clip index {str(clip)[:20]} is not one of the video's {-(-num_frames // f)} clips"
    if min(clip * f, num_frames) != frames_kept:
        return f"it continues after clip {clip}, but {frames_kept} frames were kept (clips of {f})"
    if done != clip * steps:
        return f"it counts {str(done)[:20]} steps done for {clip} clips of {steps} steps"
    if not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8):
        return "its random state is not a generator state"
    previous = carry.get("previous")
    if previous is not None and not (isinstance(previous, torch.Tensor) and previous.ndim == 4):
        return "its motion frames are not frames"
    return None


def iter_clip_video(pipe: SamplingPipeline, portrait: Portrait, audio: AudioFeatures, opts: SamplingOptions,
                    conditions_type: type[ClipConditions]) -> Iterator[torch.Tensor]:
    """Yield each clip's frames [f, H, W, 3] (the last clip trimmed to the audio) as soon as it is decoded."""
    cfg = pipe.config
    f, n, steps = opts.frames_per_clip, opts.motion_frames, opts.steps
    if (n if cfg.spec.motion_route == "joined" else 0) + f > cfg.temporal_max_len:
        raise ValueError(f"frames_per_clip + motion_frames = {n + f} exceeds {cfg.temporal_max_len}, "
                         "the longest sequence this model's temporal modules know.")
    if audio.features.shape[0] % f:
        audio = pipe.encode_speech(audio.speech, audio.fps, f)
    total_clips = audio.features.shape[0] // f
    use_cfg = opts.guidance_scale > 1.0
    plan = step_plan(steps, use_cfg, opts.guidance_interval, opts.cache_interval)
    device, dtype = pipe.device, pipe.dtype
    generator = torch.Generator("cpu").manual_seed(int(opts.seed))
    decode_chunk = 1 if pipe.low_vram else opts.decode_chunk_size

    portrait = portrait.to(device, dtype)
    ref_latent = pipe.encode_images(portrait.pixels[None])
    conditions = conditions_type(pipe, portrait, ref_latent, opts, use_cfg)
    latent_shape = (1, cfg.latent_channels, f, ref_latent.shape[-2], ref_latent.shape[-1])

    previous: torch.Tensor | None = None  # last decoded frames, [n, H, W, 3] in 0..1
    memory = None  # MEMO: each temporal module's memory of the clips so far
    done_steps = first_clip = 0
    checkpoint = opts.checkpoint
    carry = checkpoint.restore() if checkpoint is not None else None
    if carry is not None:  # continue after the last kept clip, exactly as if never stopped
        first_clip, done_steps, previous = carry["clip"], carry["done_steps"], carry["previous"]
        memory = conditions.restore(carry["memory"], device)
        generator.set_state(carry["rng"])
    backbone = pipe.backbone
    for clip in range(first_clip, total_clips):
        cond = conditions(audio, clip, previous, generator, memory)
        memory = cond.memory
        denoise = Denoiser(backbone, cond, use_cfg, opts.guidance_scale, pipe.low_vram,
                           DeepFeatureCache() if opts.cache_interval > 1 else None)
        del cond  # the denoiser holds what it needs (in low-VRAM mode, only per-item copies)
        latents = torch.randn(latent_shape, generator=generator, dtype=dtype).to(device)
        scheduler = make_scheduler(opts.scheduler, cfg.scheduler)
        scheduler.set_timesteps(steps, device=device)
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
        latents = latents * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts at σ = 1
        scale_input = getattr(scheduler, "scale_model_input", lambda x, t: x)
        for t, (guided, reuse) in zip(scheduler.timesteps, plan):
            if opts.callbacks.is_cancelled and opts.callbacks.is_cancelled():
                raise GenerationCancelled()
            with pipe.stage("denoising"):
                pred = denoise(scale_input(latents, t), t, guided, reuse)
            out = scheduler.step(pred, t, latents, **step_kwargs)
            latents = out.prev_sample
            done_steps += 1
            if opts.callbacks.on_preview:  # before on_step, so a progress update can show this step
                estimate = getattr(out, "pred_original_sample", None)
                opts.callbacks.on_preview(estimate if estimate is not None else latents)
            if opts.callbacks.on_step:
                opts.callbacks.on_step(StepInfo(done_steps, steps * total_clips, clip, total_clips, int(t)))
        del denoise
        flat = latents[0].transpose(0, 1)  # [F, 4, h, w]
        with pipe.stage("vae decode"):
            frames = pipe.decode_latents(flat, decode_chunk)
        # the last n frames made so far (they can span clips when a clip is shorter than n)
        previous = (frames if previous is None else torch.cat([previous, frames]))[-n:] if n > 0 else None
        keep = min(f, audio.num_frames - clip * f)
        if checkpoint is not None:  # kept together with this clip's frames, once the caller has them
            checkpoint.save({"clip": clip + 1, "done_steps": done_steps, "previous": previous,
                             "rng": generator.get_state(), "memory": conditions.carry(memory)},
                            with_next_frames=keep > 0)
        if keep > 0:
            yield frames[:keep]
