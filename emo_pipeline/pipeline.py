"""EMOPipeline: portrait + audio → video frames, for audio of any length.

The core (devices and precision, audio features, VAE, portrait, guidance) serves every model
family; the family (families.py) picks the audio front end and the sampling loop:

* motion frames (EMO, Hallo, Hallo2, MEMO): each clip of f frames continues from the last n frames
  of the previous one. The ReferenceNet runs once per clip on the portrait and the motion frames;
  the Backbone denoises the clip's latents with classifier-free guidance; the VAE decodes them in
  chunks and the frames are handed out before the next clip starts. MEMO's temporal modules keep
  a memory of every past clip instead (the motion frames are added to it once per clip).
* context windows (EchoMimic): the whole video's latents are denoised together in overlapping
  windows (context_windows.py), then decoded chunk by chunk.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .audio.encoder import AudioEncoder, frame_count, normalize_speech
from .compile import CompiledModule
from .config import EMOConfig
from .context_windows import iter_windowed_video
from .families import EMOTIONS, emotion_label
from .models import BackboneConditions, EMONet
from .models.frame_windows import frame_windows
from .models.attention import attention_score_budget
from .models.deep_cache import DeepFeatureCache
from .models.fp8 import move, store_weights_fp8
from .models.memory_attention import TemporalMemory
from .portrait import DEMO_MODEL, DEMO_PHOTO_WARNING, Portrait, looks_like_photograph, prepare_portrait
from .presets import resolve_options, step_plan
from .schedulers import make_scheduler
from .vae import vae_downscale

log = logging.getLogger(__name__)  # "emo_pipeline.pipeline": ComfyUI relays its warnings to the graph


AUDIO_SEGMENT_SECONDS = 60.0


class GenerationCancelled(Exception):
    """Raised between denoising steps when the caller asks to stop."""


@dataclass
class AudioFeatures:
    """Per-frame audio features of one audio clip."""

    speech: torch.Tensor  # 16 kHz speech (normalised for wav2vec), kept to re-encode for another clip length
    # wav2vec: [T_padded, layers, dim] per video frame, zero-padded audio up to a whole number of clips;
    # whisper: [T50, layers, dim] at 50 Hz (audio.whisper.frame_tokens takes each frame's tokens)
    features: torch.Tensor
    num_frames: int  # video frames the audio lasts: ceil(seconds · fps)
    fps: float
    clip_length: int

    @property
    def duration(self) -> float:
        return self.speech.numel() / 16000


@dataclass
class StepInfo:
    """Progress. Motion-frame sampling: a step is one denoising step of one clip. Context-window
    sampling: a step is one window's Backbone call, and `clip` counts the windows of the step."""

    step: int  # steps done over the whole video, 1-based
    total_steps: int
    clip: int  # 0-based
    total_clips: int
    timestep: int
    unit: str = "clip"  # "clip" or "window"


@dataclass
class Callbacks:
    on_step: Callable[[StepInfo], None] | None = None
    is_cancelled: Callable[[], bool] | None = None
    # Receives the current estimate of the clean latents [1, 4, F, h, w] after each step.
    on_preview: Callable[[torch.Tensor], None] | None = None


@dataclass
class SamplingOptions:
    """How to sample. Fields left None take the preset's value (when a preset is named), else the
    exact default: the model's steps and guidance, DDIM, guidance on every step, no feature reuse."""

    seed: int = 0
    preset: str | None = None  # a name from presets.PRESETS ("quality", "balanced", "fast")
    steps: int | None = None
    guidance_scale: float | None = None
    frames_per_clip: int | None = None
    motion_frames: int | None = None
    scheduler: str | None = None
    # Share of the steps, as (start, end) in 0..1, that use guidance; outside it only the
    # conditional rows run (half the work of a guided step). (0, 1): every step, as Hallo.
    guidance_interval: tuple[float, float] | None = None
    # DeepCache: a full Backbone pass every n steps; the steps between reuse its low-resolution
    # features and run only the top level. 1: off.
    cache_interval: int | None = None
    # Context-window families (EchoMimic): frames shared by neighbouring windows; None: the family's own.
    # The window itself is `frames_per_clip` frames.
    context_overlap: int | None = None
    head_speed: float | torch.Tensor | None = None  # radians per frame, EMO's speed layers only
    emotion: str | None = None  # MEMO: one of families.EMOTIONS; None: neutral
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # background(pose), face, lip
    decode_chunk_size: int = 8
    callbacks: Callbacks = field(default_factory=Callbacks)
    # Durable progress (render_state.RenderState, or anything with its restore/save/due/frames_done): the
    # loop continues from what it restores and saves after each clip (context windows: every N steps).
    checkpoint: Any = None


def check_dtype_supported(device: torch.device, dtype: torch.dtype) -> None:
    """Fail early, with a readable message, when the device cannot run the chosen precision."""
    try:
        x = torch.randn(1, 8, 8, 8, device=device, dtype=dtype)
        F.conv2d(x, torch.randn(8, 8, 3, 3, device=device, dtype=dtype), padding=1)
        F.group_norm(x, 4)
        q = x.flatten(2).transpose(1, 2)[None]
        F.scaled_dot_product_attention(q, q, q)
    except (RuntimeError, NotImplementedError) as err:
        name = str(dtype).replace("torch.", "")
        raise ValueError(
            f"{name} is not supported on {device}: {err}. Choose fp32 (or bf16 on recent CPUs/GPUs)."
        ) from None


# Low-VRAM mode: no attention call may need more score elements than this (256 Mi, 0.5 GiB in fp16).
LOW_VRAM_SCORE_BUDGET = 2**28


class EMOPipeline:
    """`low_vram`: guided rows run one after the other instead of as one batch, the VAE decodes
    one frame at a time, attention is split so that no call holds its full score matrix, and
    wav2vec stays on the CPU (it runs once per audio, before sampling). Frames are the same as
    without it, within round-off. `compile`: the Backbone runs through
    torch.compile (see compile.py)."""

    def __init__(self, net: EMONet, vae: torch.nn.Module, audio_encoder: AudioEncoder,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, low_vram: bool = False,
                 compile: bool = False) -> None:
        shrink = vae_downscale(vae)
        if shrink and shrink != net.config.vae_downscale:
            raise ValueError(
                f"The VAE shrinks images {shrink}x but the network {net.config.name!r} expects "
                f"{net.config.vae_downscale}x latents: use the VAE that came with this network (sd-vae-ft-mse for "
                "Hallo and EMO weights, models/demo/vae for the demo model).")
        self.net = net.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        self.audio_encoder = audio_encoder
        self._low_vram = low_vram
        self._compiled = CompiledModule(self.net.denoising_unet)
        self.compile = compile
        self.device, self.dtype = torch.device("cpu"), torch.float32
        # Seconds spent per stage, summed over calls; filled only when `profile` is on (it syncs the GPU).
        self.profile = False
        self.timings: dict[str, float] = {}
        self.to(device, dtype)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if not self.profile:
            yield
            return
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        yield
        sync()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start

    @property
    def config(self) -> EMOConfig:
        return self.net.config

    def store_weights_fp8(self) -> "EMOPipeline":
        """Keep the network's linear and conv weights in scaled fp8 (half the memory of fp16),
        up-cast per layer when it runs. The VAE and wav2vec keep their precision."""
        store_weights_fp8(self.net)
        return self

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "EMOPipeline":
        """Move every model once; they then stay there between calls. `dtype` is the precision the
        models compute in (and store in, unless the network's weights are stored in fp8)."""
        device, dtype = torch.device(device), dtype or self.dtype
        check_dtype_supported(device, dtype)
        move(self.net, device, dtype)  # fp8-stored weights stay fp8
        move(self.vae, device, dtype)
        # wav2vec stays in fp32, as in Hallo: it is small and its features feed every frame.
        move(self.audio_encoder.model, self.audio_device(device), torch.float32)
        self.device, self.dtype = device, dtype
        return self

    def audio_device(self, device: torch.device | None = None) -> torch.device:
        """Where wav2vec runs: the pipeline's device, or the CPU in low-VRAM mode (a meta pipeline,
        which only counts, has no data to move and keeps it on meta)."""
        device = device or self.device
        return torch.device("cpu") if self.low_vram and device.type != "meta" else device

    @property
    def low_vram(self) -> bool:
        return self._low_vram

    @low_vram.setter
    def low_vram(self, value: bool) -> None:
        self._low_vram = value
        move(self.audio_encoder.model, self.audio_device(), torch.float32)

    # ------------------------------------------------------------------ inputs
    def prepare_portrait(self, image: torch.Tensor, **kwargs) -> Portrait:
        """image [H, W, C] in 0..1; see `portrait.prepare_portrait` for face_box, face_mask, identity."""
        cfg = self.config
        if cfg.name == DEMO_MODEL and looks_like_photograph(image):
            log.warning(DEMO_PHOTO_WARNING)
        return prepare_portrait(image, cfg.sample_size, cfg.identity_dim, cfg.latent_size, **kwargs)

    def encode_audio(self, waveform: torch.Tensor, sample_rate: int, fps: float | None = None,
                     clip_length: int | None = None) -> AudioFeatures:
        """Any channel count and rate → per-frame features; audio is padded to whole clips as Hallo does."""
        from .audio.resample import prepare_speech

        fps = fps or self.config.fps
        if not math.isfinite(fps) or fps <= 0:
            raise ValueError(f"fps must be a positive number of frames per second, not {fps}.")
        speech = prepare_speech(waveform, sample_rate, self.config.audio_sample_rate)
        if self.config.spec.audio_encoder == "whisper":
            return self._encode_whisper(speech, fps)
        return self._encode_speech(normalize_speech(speech), fps, clip_length or self.config.frames_per_clip)

    def _encode_whisper(self, speech: torch.Tensor, fps: float) -> AudioFeatures:
        """EchoMimic's front end: whisper-tiny layers at 50 Hz, 10 of them around each frame."""
        cfg = self.config
        num_frames = frame_count(speech.numel(), cfg.audio_sample_rate, fps)
        if num_frames < 1:
            raise ValueError("The audio is empty.")
        encoder = self.audio_encoder
        if (getattr(encoder, "layers", None), getattr(encoder, "dim", None)) != (cfg.audio_feature_layers,
                                                                                   cfg.audio_feature_dim):
            raise ValueError(
                f"This {cfg.spec.title} model needs whisper features of {cfg.audio_feature_layers} layers × "
                f"{cfg.audio_feature_dim}; the loaded audio encoder does not give them. Use the whisper tiny.pt "
                "that came with the model (pretrained_weights/audio_processor/whisper_tiny.pt).")
        with self._stage("audio features"):
            features = encoder.features(speech).cpu()  # 7.7 KB per 20 ms: it waits on the CPU
        return AudioFeatures(speech, features, num_frames, fps, cfg.frames_per_clip)

    def _encode_speech(self, speech: torch.Tensor, fps: float, clip_length: int) -> AudioFeatures:
        sr = self.config.audio_sample_rate
        num_frames = frame_count(speech.numel(), sr, fps)
        if num_frames < 1:
            raise ValueError("The audio is empty.")
        padded = -(-num_frames // clip_length) * clip_length
        # Hallo pads the normalised samples by whole frames of int(sr / fps) samples before wav2vec.
        pad = (padded - num_frames) * int(sr // fps)
        speech_padded = F.pad(speech, (0, pad))
        # wav2vec attends over its whole input, so its memory grows with the square of the length.
        # Up to AUDIO_SEGMENT_SECONDS the audio is encoded whole, exactly as Hallo does; longer
        # audio is encoded in segments of that length (whole clips), as Hallo2 does for long audio.
        segment = max(clip_length, int(AUDIO_SEGMENT_SECONDS * fps) // clip_length * clip_length)
        parts = []
        with self._stage("audio features"):
            for start in range(0, padded, segment):
                end = min(start + segment, padded)
                a, b = round(start * sr / fps), (round(end * sr / fps) if end < padded else speech_padded.numel())
                parts.append(self.audio_encoder(speech_padded[a:b], end - start))
        features = torch.cat(parts)
        if features.shape[1:] != (self.config.audio_feature_layers, self.config.audio_feature_dim):
            raise ValueError(
                f"The audio encoder gives {features.shape[1]} layers of {features.shape[2]} features; this model "
                f"expects {self.config.audio_feature_layers} × {self.config.audio_feature_dim}. Use the wav2vec2 "
                "model the checkpoint was trained with (wav2vec2-base-960h for Hallo)."
            )
        return AudioFeatures(speech, features, num_frames, fps, clip_length)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] in [-1, 1] → latents [N, 4, S/8, S/8] (distribution mean × scale, as Hallo)."""
        pixels = pixels.to(self.device, self.dtype)
        return self.vae.encode(pixels).latent_dist.mean * self.config.vae_scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor:
        """[N, 4, h, w] → frames [N, H, W, 3] float32 in 0..1 on the CPU, decoded chunk_size at a time."""
        frames = []
        for part in latents.split(max(1, chunk_size)):
            image = self.vae.decode(part / self.config.vae_scaling_factor).sample
            frames.append((image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu())
        return torch.cat(frames)

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def generate(self, portrait: Portrait, audio: AudioFeatures, options: SamplingOptions | None = None) -> torch.Tensor:
        """All frames [T, H, W, 3] (T = audio.num_frames), float32 in 0..1 on the CPU."""
        return torch.cat(list(self.iter_clips(portrait, audio, options)))

    @torch.no_grad()
    def iter_clips(self, portrait: Portrait, audio: AudioFeatures,
                   options: SamplingOptions | None = None) -> Iterator[torch.Tensor]:
        """Yield the frames [f_k, H, W, 3] in order as soon as they are decoded: each clip's (the last one
        trimmed), or for context-window families each decoded chunk."""
        opts = resolve_options(options or SamplingOptions(), self.config)
        budget = LOW_VRAM_SCORE_BUDGET if self.low_vram else None
        with attention_score_budget(budget):
            if self.config.spec.sampling == "context_windows":
                yield from iter_windowed_video(self, portrait, audio, opts)
            else:
                yield from self._iter_clips(portrait, audio, opts)

    def _iter_clips(self, portrait: Portrait, audio: AudioFeatures, opts: SamplingOptions) -> Iterator[torch.Tensor]:
        cfg = self.config
        f, n, steps = opts.frames_per_clip, opts.motion_frames, opts.steps
        if (n if cfg.spec.motion_route == "joined" else 0) + f > cfg.temporal_max_len:
            raise ValueError(f"frames_per_clip + motion_frames = {n + f} exceeds {cfg.temporal_max_len}, "
                             "the longest sequence this model's temporal modules know.")
        if audio.features.shape[0] % f:
            audio = self._encode_speech(audio.speech, audio.fps, f)
        total_clips = audio.features.shape[0] // f
        use_cfg = opts.guidance_scale > 1.0
        plan = step_plan(steps, use_cfg, opts.guidance_interval, opts.cache_interval)
        net, device, dtype = self.net, self.device, self.dtype
        generator = torch.Generator("cpu").manual_seed(int(opts.seed))
        decode_chunk = 1 if self.low_vram else opts.decode_chunk_size

        portrait = portrait.to(device, dtype)
        ref_latent = self.encode_images(portrait.pixels[None])
        conds = self.static_conditions(portrait, use_cfg)
        latent_shape = (1, cfg.latent_channels, f, ref_latent.shape[-2], ref_latent.shape[-1])

        previous: torch.Tensor | None = None  # last decoded frames, [n, H, W, 3] in 0..1
        memory = None  # MEMO: each temporal module's memory of the clips so far
        done_steps = first_clip = 0
        checkpoint = opts.checkpoint
        carry = checkpoint.restore() if checkpoint is not None else None
        if carry is not None:  # continue after the last kept clip, exactly as if never stopped
            first_clip, done_steps, previous = carry["clip"], carry["done_steps"], carry["previous"]
            memory = None if carry["memory"] is None else [
                [TemporalMemory(kv.to(device), z.to(device)) for kv, z in blocks] for blocks in carry["memory"]]
            generator.set_state(carry["rng"])
        backbone = self._compiled if self.compile else net.denoising_unet
        for clip in range(first_clip, total_clips):
            cond = self.clip_conditions(portrait, ref_latent, conds, audio, clip, previous, opts, use_cfg, generator,
                                        memory)
            memory = cond.memory
            denoise = Denoiser(backbone, cond, use_cfg, opts.guidance_scale, self.low_vram,
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
                with self._stage("denoising"):
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
            with self._stage("vae decode"):
                frames = self.decode_latents(flat, decode_chunk)
            # the last n frames made so far (they can span clips when a clip is shorter than n)
            previous = (frames if previous is None else torch.cat([previous, frames]))[-n:] if n > 0 else None
            keep = min(f, audio.num_frames - clip * f)
            if checkpoint is not None:  # kept together with this clip's frames, once the caller has them
                checkpoint.save({"clip": clip + 1, "done_steps": done_steps, "previous": previous,
                                 "rng": generator.get_state(),
                                 "memory": None if memory is None else [[(m.kv, m.z) for m in blocks]
                                                                        for blocks in memory]},
                                with_next_frames=keep > 0)
            if keep > 0:
                yield frames[:keep]

    # ------------------------------------------------------------------ helpers
    def clip_conditions(self, portrait: Portrait, ref_latent: torch.Tensor, conds: dict[str, torch.Tensor],
                        audio: AudioFeatures, clip: int, previous: torch.Tensor | None, opts: SamplingOptions,
                        use_cfg: bool, generator: torch.Generator,
                        memory: list[list[TemporalMemory]] | None = None) -> BackboneConditions:
        """Everything the Backbone reads for one clip: ReferenceNet features of the portrait and the
        motion frames, the clip's audio tokens, masks, identity, face region and speed; for MEMO the
        temporal memory (`memory`: the one before this clip) and the emotion label."""
        cfg, net = self.config, self.net
        f, n = opts.frames_per_clip, opts.motion_frames
        with self._stage("reference net"):
            reference, motion = self._reference_features(
                portrait, ref_latent, previous, n, conds["identity"], use_cfg, f, generator, memory)
        if cfg.spec.motion_route == "memory":  # the past frames went into the memory
            memory, motion = motion, None
        else:
            memory = None
        emotion = None
        if cfg.spec.audio_route == "joint_audio":
            label = emotion_label(opts.emotion or "neutral")
            # the unconditional row has no emotion: the label after the last class
            emotion = torch.tensor([len(EMOTIONS), label] if use_cfg else [label], device=self.device)
        windows = frame_windows(audio.features[None], cfg.audio_context, clip * f, (clip + 1) * f)
        audio_tokens = net.audioproj(windows.to(self.device, self.dtype))
        if use_cfg:  # the unconditional item hears nothing (Hallo: zero tokens)
            audio_tokens = torch.cat([torch.zeros_like(audio_tokens), audio_tokens])
        return BackboneConditions(
            identity=conds["identity"], audio=audio_tokens, face_features=conds["face"],
            reference=reference, motion=motion, masks=portrait.masks,
            region_weights=tuple(opts.region_weights),
            speed=self._speed_embedding(opts.head_speed, clip, f, conds["identity"].shape[0]),
            audio_heard=(False, True) if use_cfg else None,
            emotion=emotion,
            memory=memory,
        )

    def static_conditions(self, portrait: Portrait, use_cfg: bool) -> dict[str, torch.Tensor]:
        """Identity tokens and face-locator features for the batch rows [uncond, cond] (or [cond])."""
        cfg, net = self.config, self.net
        identity = net.imageproj(portrait.identity[None])
        face = net.face_locator(portrait.face_region[None]) if net.face_locator is not None else None
        if use_cfg:
            # Hallo's unconditional identity is the projection of a zero embedding, not zero tokens.
            uncond_identity = net.imageproj(torch.zeros_like(portrait.identity[None])) \
                if cfg.uncond_drops_identity else identity
            uncond_face = torch.zeros_like(face) if cfg.uncond_drops_face_region and face is not None else face
            identity = torch.cat([uncond_identity, identity])
            face = torch.cat([uncond_face, face]) if face is not None else None
        return {"identity": identity, "face": face}

    def _reference_features(self, portrait: Portrait, ref_latent: torch.Tensor, previous: torch.Tensor | None,
                            n: int, identity: torch.Tensor, use_cfg: bool, f: int, generator: torch.Generator,
                            memory: list[list[TemporalMemory]] | None = None):
        """Run the ReferenceNet on [portrait, motion frames] for every batch row → (reference keys/values,
        motion-frame features), or for MEMO (reference keys/values, the temporal memory with these frames added
        to `memory`)."""
        cfg, net = self.config, self.net
        rows = identity.shape[0]
        zero_motion = False
        motion_pixels = None  # [n, 3, S, S] in [-1, 1]
        if n > 0 and previous is not None:
            motion_pixels = previous[-n:].permute(0, 3, 1, 2).to(self.device, self.dtype) * 2 - 1
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
            keep = keep.to(self.device) | portrait.face_region.bool()
            latents = torch.cat([ref_latent, self.encode_images(motion_pixels * keep)])
        elif previous is None:
            latents = ref_latent.repeat(1 + n, 1, 1, 1)  # the portrait encodes to the same latent each time
        else:
            latents = torch.cat([ref_latent, self.encode_images(motion_pixels)])
        per_row = latents.shape[0]
        latents = latents.repeat(rows, 1, 1, 1)
        # Hallo pairs ReferenceNet rows with identity tokens cyclically ([u, c, u, c, ...]).
        context = identity.repeat(per_row, 1, 1)
        use_reference = [not (use_cfg and cfg.uncond_drops_reference and row == 0) for row in range(rows)]
        if cfg.spec.motion_route == "memory":
            features, plain = net.reference_unet(latents, context, with_plain=True)
            reference, _ = net.denoising_unet.prepare_reference(features, rows, f, use_reference,
                                                                cfg.reference_tiles_batch, motion=False)
            return reference, net.denoising_unet.prepare_memory(features, plain, rows, memory)
        features = net.reference_unet(latents, context)
        if zero_motion:
            features = [
                torch.cat([x.view(rows, 1, *x.shape[1:]), x.new_zeros(rows, n, *x.shape[1:])], dim=1).flatten(0, 1)
                for x in features
            ]
        return net.denoising_unet.prepare_reference(features, rows, f, use_reference, cfg.reference_tiles_batch)

    def _speed_embedding(self, head_speed, clip: int, f: int, rows: int) -> torch.Tensor | None:
        """Speed embeddings [rows, f, C] for one clip; head_speed is constant or one value per frame."""
        encoder = self.net.speed_encoder
        if encoder is None:
            if head_speed is not None:
                raise ValueError("This model has no speed layers (Hallo weights); leave head_speed unset.")
            return None
        speed = torch.as_tensor(0.0 if head_speed is None else head_speed, dtype=torch.float32).flatten()
        index = torch.arange(clip * f, (clip + 1) * f).clamp(max=speed.numel() - 1)
        return encoder(speed[index].to(self.device)[None].expand(rows, -1))


class Denoiser:
    """One clip's model prediction per step: guided or conditional rows only, batched or (low-VRAM)
    one item after the other, with or without reused deep features. Row subsets are selected
    once per clip, so their projection caches last the whole clip."""

    def __init__(self, unet: torch.nn.Module, cond: BackboneConditions, use_cfg: bool, guidance: float,
                 one_by_one: bool, deep_cache: DeepFeatureCache | None) -> None:
        self.unet, self.guidance, self.deep_cache = unet, guidance, deep_cache
        self._cond: BackboneConditions | None = None
        if one_by_one and cond.batch > 1:
            items = [cond.select([i]) for i in range(cond.batch)]
            self.groups = {True: items, False: items[-1:]}  # the last item is the conditional one
        elif use_cfg:
            self.groups = {True: [cond]}
            self._cond = cond  # its conditional item alone is selected at the first unguided step, if any
        else:
            self.groups = {True: [cond], False: [cond]}

    def _rows(self, guided: bool) -> list[BackboneConditions]:
        if guided not in self.groups:
            self.groups[guided] = [self._cond.select([self._cond.batch - 1])]
        return self.groups[guided]

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, guided: bool, reuse: bool) -> torch.Tensor:
        if self.deep_cache is not None:
            self.deep_cache.reusing = reuse
        preds = [self.unet(latents.expand(group.batch, *latents.shape[1:]), t, group, self.deep_cache)
                 for group in self._rows(guided)]
        pred = preds[0] if len(preds) == 1 else torch.cat(preds)
        if not guided:
            return pred
        uncond, cond = pred.chunk(2)
        return uncond + self.guidance * (cond - uncond)
