"""EMO Sampler: portrait + audio features → video frames, one per audio frame, clip by clip."""

from __future__ import annotations

from typing import Iterator

import torch

import comfy.model_management as mm
import comfy.utils

from ..emo_pipeline.memory_plan import memory_required
from ..emo_pipeline.sampling.presets import PRESETS, resolve_options
from ..emo_pipeline.sampling.schedulers import SCHEDULERS
from ..emo_pipeline.sampling.steps import Callbacks, GenerationCancelled, SamplingOptions
from .notify import relays_warnings
from .preview import step_previewer
from .sampler_options import MODEL_DEFAULT, OPTIONS, settings


AUTO = "auto"  # the scheduler widget's "the model's own" (DDIM, or flow-matching Euler for MEMO)
CUSTOM = "custom"
# "model default" is the engine's exact default (its preset "quality", with the scheduler widget's choice)
PRESET_CHOICES = [MODEL_DEFAULT, *(name for name in PRESETS if name != "quality"), CUSTOM]


class EMOSampler:
    DESCRIPTION = ("Generates the talking-head frames. Hallo/EMO models make long audio of clips that continue from "
                   "the last frames of the previous clip; MEMO models keep a memory of every clip so far; EchoMimic "
                   "models denoise the whole video at once in overlapping windows. The progress bar counts every "
                   "step of every clip (or window).")
    CATEGORY = "EMO"
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL", {"tooltip": "From Load EMO Model."}),
                "reference": ("EMO_REFERENCE", {"tooltip": "From EMO ReferenceNet Encode: the prepared portrait."}),
                "audio": ("EMO_AUDIO", {"tooltip": "From EMO Encode Audio: one video frame per audio frame."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "The noise seed: the same seed and settings give the same video."}),
                "steps": ("INT", {"default": 40, "min": 1, "max": 200,
                                  "tooltip": "Denoising steps, used when preset is custom (the model's own: 40 Hallo, "
                                             "30 EchoMimic, 6 EchoMimic acc, 20 MEMO)."}),
                "cfg": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "Guidance scale, used when preset is custom; 1 turns guidance off (twice "
                                             "as fast). The model's own: 3.5 Hallo, 2.5 EchoMimic, 1 EchoMimic acc, "
                                             "3.5 MEMO."}),
                "preset": (PRESET_CHOICES, {"default": MODEL_DEFAULT,
                           "tooltip": "model default: the model's own steps and cfg (the steps and cfg widgets are "
                                      "not used). custom: the steps, cfg and scheduler widgets decide. "
                                      + "; ".join(f"{k}: {v.summary}, the model's cfg (steps, cfg and scheduler "
                                                  "widgets not used)" for k, v in PRESETS.items() if k != "quality")
                                      + "."}),
                "scheduler": ([AUTO, *SCHEDULERS], {"default": AUTO,
                              "tooltip": "Used with model default and custom. auto: the model's own (DDIM; "
                                         "flow_euler for MEMO, a rectified-flow model that also takes dpmpp_2m and "
                                         "unipc)."}),
            },
            "optional": {"options": (OPTIONS, {
                "tooltip": "Optional: EMO Sampler Options (clip length, motion frames, decode chunk, guidance "
                           "interval, DeepCache, region weights) and/or EMO Family Options (EMO head speed, "
                           "EchoMimic overlap, MEMO emotion). Without it: the model's own."})},
        }

    @relays_warnings
    def sample(self, model, reference, audio, seed, steps, cfg, preset, scheduler, options=None):
        size = model.pipeline.config.sample_size
        check_image_fits(audio.num_frames, size, size)
        frames = torch.empty(audio.num_frames, size, size, 3)
        done = 0
        for clip in iter_frames(model, reference, audio, seed, steps, cfg, preset, scheduler, options):
            frames[done: done + len(clip)] = clip
            done += len(clip)
        return (frames,)


def check_image_fits(num_frames: int, height: int, width: int) -> None:
    """Refuse, before any sampling, a video whose IMAGE batch (float32, as ComfyUI holds it) would not fit
    in the RAM that is free now, naming the node that streams instead."""
    needed = num_frames * height * width * 3 * 4
    free = available_ram()
    if free is not None and needed > 0.8 * free:
        raise ValueError(
            f"EMO Sampler: {num_frames} frames at {width}×{height} need {needed / 2**30:.1f} GiB of RAM as an IMAGE "
            f"batch, and {free / 2**30:.1f} GiB is free. For long audio use EMO Sample To Video, which writes each "
            "clip into the MP4 as it is made (memory stays flat at any length).")


def available_ram() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def iter_frames(model, reference, audio, seed: int, steps: int, cfg: float, preset: str, scheduler: str,
                options: dict | None = None, resume=None) -> Iterator[torch.Tensor]:
    """The frames [f, S, S, 3] of EMO Sampler's widgets and options, clip by clip as they are decoded, with
    ComfyUI's progress bar, previews and cancel. `resume(pipeline, options)`: the render's kept progress
    (render_state.RenderState) for the loop to continue from and keep."""
    config = model.pipeline.config
    windows = config.spec.sampling == "context_windows"
    s = settings(options)
    if preset not in PRESET_CHOICES:
        raise ValueError(f"EMO Sampler: unknown preset {preset!r}; choose one of {', '.join(PRESET_CHOICES)}.")
    f = s["frames_per_clip"] or config.frames_per_clip
    n = config.motion_frames if s["motion_frames"] is None or windows else s["motion_frames"]
    own = dict(preset=None, scheduler=None if scheduler == AUTO else scheduler,
               guidance_interval=(0.0, s["guidance_end"]), cache_interval=1 if windows else s["cache_interval"])
    if preset == CUSTOM:
        knobs = dict(own, steps=steps, guidance_scale=cfg)
    elif preset == MODEL_DEFAULT:
        knobs = dict(own, steps=None, guidance_scale=None)
    else:
        knobs = dict(preset=preset, guidance_scale=None)
    decode_chunk = s["decode_chunk"]
    options = resolve_options(SamplingOptions(
        seed=seed, frames_per_clip=f, motion_frames=n, context_overlap=s["context_overlap"],
        region_weights=(s["pose_weight"], s["face_weight"], s["lip_weight"]),
        # memory_mode auto may have found that only a smaller VAE decode chunk fits
        decode_chunk_size=min(decode_chunk, model.plan.decode_chunk) if getattr(model, "plan", None) else decode_chunk,
        head_speed=s["head_speed"] if config.has_speed_layers else None, emotion=s["emotion"], **knobs), config)
    # wav2vec is not needed while sampling: only the network and the VAE are brought to the device
    pipeline = model.load("net", "vae", memory_required=memory_required(model.pipeline, options, audio.num_frames))
    if resume is not None:
        options.checkpoint = resume(pipeline, options)
    total_clips = -(-audio.num_frames // f)
    bar = comfy.utils.ProgressBar(total_clips * options.steps)  # on_step gives the exact total
    previewer = step_previewer(pipeline)
    latest = {}

    def on_step(info):
        preview = None
        if previewer is not None and "x0" in latest:
            preview = previewer(latest["x0"][:, :, 0])
        bar.update_absolute(info.step, info.total_steps, preview)  # also ComfyUI's cancel point

    def on_preview(x0):
        latest["x0"] = x0

    options.callbacks = Callbacks(on_step=on_step, is_cancelled=mm.processing_interrupted,
                                  on_preview=on_preview if previewer is not None else None)
    try:
        yield from pipeline.iter_clips(reference, audio, options)
    except GenerationCancelled:
        mm.throw_exception_if_processing_interrupted()
        raise
