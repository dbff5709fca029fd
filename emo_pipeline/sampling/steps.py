"""What every sampling loop shares: the options, the callbacks and the progress they report, the stop
between steps, and what a loop reads of the pipeline that hands itself over (`SamplingPipeline`)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from ..io.errors import NamedPlainly

if TYPE_CHECKING:  # annotations only: the command line reads these types before torch is imported
    import torch

    from ..audio.features import AudioFeatures
    from ..config import EMOConfig
    from ..models import EMONet


class GenerationCancelled(NamedPlainly, Exception):
    """Raised between denoising steps when the caller asks to stop."""


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
    # MEMO: one of families.EMOTIONS for the whole video, or one per clip (its detected emotions: audio/emotion.py);
    # None: neutral
    emotion: str | Sequence[str] | None = None
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # background(pose), face, lip
    # Pose-driven families (EchoMimic v2): the hand-pose sequence (poses.sequence.PoseSequence); V-Express: the face
    # keypoints (poses.face_keypoint_sequence.FaceKeypointSequence). One per video frame (made as long as the audio
    # first: pose_input.py, keypoint_input.py); drawn and encoded window by window.
    poses: Any = None
    decode_chunk_size: int = 8
    callbacks: Callbacks = field(default_factory=Callbacks)
    # Durable progress (render_state.RenderState, or anything with its restore/save/due/frames_done): the
    # loop continues from what it restores and saves after each clip (context windows: every N steps).
    checkpoint: Any = None


class SamplingPipeline(Protocol):
    """What a sampling loop reads of the pipeline (EMOPipeline in pipeline.py hands itself to the loop)."""

    net: EMONet
    device: torch.device
    dtype: torch.dtype
    low_vram: bool

    @property
    def config(self) -> EMOConfig: ...

    @property
    def backbone(self) -> torch.nn.Module: ...  # the denoising UNet, compiled or not

    def stage(self, name: str) -> AbstractContextManager[None]: ...  # times a stage when profiling

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor: ...

    def decode_latents(self, latents: torch.Tensor, chunk_size: int = 8) -> torch.Tensor: ...

    def encode_speech(self, speech: torch.Tensor, fps: float, clip_length: int) -> AudioFeatures: ...
