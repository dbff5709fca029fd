"""EMO Sampler: portrait + audio features → video frames, one per audio frame, clip by clip."""

from __future__ import annotations

from typing import Iterator

import torch

import comfy.latent_formats
import comfy.model_management as mm
import comfy.utils
import latent_preview

from ..emo_pipeline.families import EMOTIONS
from ..emo_pipeline.memory_plan import memory_required
from ..emo_pipeline.sampling.presets import PRESETS, resolve_options
from ..emo_pipeline.sampling.schedulers import SCHEDULERS
from ..emo_pipeline.sampling.steps import Callbacks, GenerationCancelled, SamplingOptions
from .notify import relays_warnings


PRESET_CHOICES = ["custom", *PRESETS]
AUTO = "auto"  # the scheduler widget's "the model's own" (DDIM, or flow-matching Euler for MEMO)


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
                "model": ("EMO_MODEL",),
                "reference": ("EMO_REFERENCE",),
                "audio": ("EMO_AUDIO",),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True}),
                "steps": ("INT", {"default": 0, "min": 0, "max": 200,
                                  "tooltip": "0: the model's own (40 Hallo, 30 EchoMimic, 6 EchoMimic acc, 20 MEMO)."}),
                "cfg": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 20.0, "step": 0.1,
                                  "tooltip": "Guidance scale; 1 turns guidance off (twice as fast). 0: the model's "
                                             "own (3.5 Hallo, 2.5 EchoMimic, 1 EchoMimic acc, 3.5 MEMO)."}),
                "frames_per_clip": ("INT", {"default": 0, "min": 0, "max": 30,
                                            "tooltip": "0: the model's own (16 for Hallo and MEMO, 12 for EMO; for "
                                                       "EchoMimic the context window, 12)."}),
                "motion_frames": ("INT", {"default": -1, "min": -1, "max": 16,
                                          "tooltip": "-1: the model's own (2 for Hallo, 4 for EMO, 16 past frames "
                                                     "for MEMO's memory, none for EchoMimic)."}),
                "scheduler": ([AUTO, *SCHEDULERS], {"default": AUTO,
                              "tooltip": "auto: the model's own (DDIM; flow_euler for MEMO, a rectified-flow model "
                                         "that also takes dpmpp_2m and unipc)."}),
            },
            "optional": {
                "decode_chunk": ("INT", {"default": 8, "min": 1, "max": 64,
                                         "tooltip": "Frames the VAE decodes at once; lower it if memory runs out."}),
                "pose_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05}),
                "face_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05}),
                "lip_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05}),
                "head_speed": ("FLOAT", {"default": 0.0, "min": -0.2, "max": 0.2, "step": 0.005,
                                         "tooltip": "Head turn per frame (radians of yaw, the sign is the direction; "
                                                    "0.05 is brisk). EMO models' speed layers only; Hallo weights "
                                                    "ignore it."}),
                "preset": (PRESET_CHOICES, {"default": "custom",
                           "tooltip": "custom: the widgets decide. Otherwise the preset sets steps, scheduler, "
                                      "guidance end and cache interval (those widgets are ignored): "
                                      + "; ".join(f"{k}: {v.summary}" for k, v in PRESETS.items())}),
                "guidance_end": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                 "tooltip": "Share of the steps that use guidance (from the start); the later "
                                            "steps run the conditional half only. 1: every step, as Hallo."}),
                "cache_interval": ("INT", {"default": 1, "min": 1, "max": 8,
                                   "tooltip": "DeepCache: a full pass every N steps; the steps between reuse its "
                                              "low-resolution features (about half the work). 1: off. Hallo/EMO "
                                              "models only."}),
                "context_overlap": ("INT", {"default": -1, "min": -1, "max": 29,
                                    "tooltip": "EchoMimic models: frames shared by neighbouring context windows. "
                                               "-1: the model's own (3)."}),
                "emotion": (list(EMOTIONS), {"default": "neutral",
                            "tooltip": "MEMO models: the emotion its audio modules express (MEMO's own pipeline "
                                       "detects it from the voice with emotion2vec; here it is chosen). Other "
                                       "models ignore it."}),
            },
        }

    @relays_warnings
    def sample(self, model, reference, audio, seed, steps, cfg, frames_per_clip, motion_frames, scheduler,
               decode_chunk=8, pose_weight=1.0, face_weight=1.0, lip_weight=1.0, head_speed=0.0,
               preset="custom", guidance_end=1.0, cache_interval=1, context_overlap=-1, emotion="neutral"):
        size = model.pipeline.config.sample_size
        check_image_fits(audio.num_frames, size, size)
        frames = torch.empty(audio.num_frames, size, size, 3)
        done = 0
        for clip in iter_frames(model, reference, audio, seed, steps, cfg, frames_per_clip, motion_frames, scheduler,
                                decode_chunk, pose_weight, face_weight, lip_weight, head_speed, preset, guidance_end,
                                cache_interval, context_overlap, emotion):
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


def iter_frames(model, reference, audio, seed, steps, cfg, frames_per_clip, motion_frames, scheduler,
                decode_chunk=8, pose_weight=1.0, face_weight=1.0, lip_weight=1.0, head_speed=0.0, preset="custom",
                guidance_end=1.0, cache_interval=1, context_overlap=-1, emotion="neutral",
                resume=None) -> Iterator[torch.Tensor]:
    """The frames [f, S, S, 3] of EMO Sampler's widgets, clip by clip as they are decoded, with ComfyUI's
    progress bar, previews and cancel. `resume(pipeline, options)`: the render's kept progress
    (render_state.RenderState) for the loop to continue from and keep."""
    config = model.pipeline.config
    windows = config.spec.sampling == "context_windows"
    f = frames_per_clip or config.frames_per_clip
    n = config.motion_frames if motion_frames < 0 or windows else motion_frames
    if preset == "custom":
        knobs = dict(preset=None, steps=steps or None, scheduler=None if scheduler == AUTO else scheduler,
                     guidance_interval=(0.0, guidance_end),
                     cache_interval=1 if windows else cache_interval)
    else:
        knobs = dict(preset=preset)
    options = resolve_options(SamplingOptions(
        seed=seed, guidance_scale=cfg or None, frames_per_clip=f, motion_frames=n,
        context_overlap=None if context_overlap < 0 else context_overlap,
        region_weights=(pose_weight, face_weight, lip_weight),
        # memory_mode auto may have found that only a smaller VAE decode chunk fits
        decode_chunk_size=min(decode_chunk, model.plan.decode_chunk) if getattr(model, "plan", None) else decode_chunk,
        head_speed=head_speed if config.has_speed_layers else None, emotion=emotion, **knobs), config)
    # wav2vec is not needed while sampling: only the network and the VAE are brought to the device
    pipeline = model.load("net", "vae", memory_required=memory_required(model.pipeline, options, audio.num_frames))
    if resume is not None:
        options.checkpoint = resume(pipeline, options)
    total_clips = -(-audio.num_frames // f)
    bar = comfy.utils.ProgressBar(total_clips * options.steps)  # on_step gives the exact total
    previewer = latent_preview.get_previewer(pipeline.device, comfy.latent_formats.SD15())
    latest = {}

    def on_step(info):
        preview = None
        if previewer is not None and "x0" in latest:
            preview = previewer.decode_latent_to_preview_image("JPEG", latest["x0"][:, :, 0])
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
