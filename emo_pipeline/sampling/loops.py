"""The family record (families.py, `Family.sampling`) names its sampling loop; this is where the name
finds the loop. Each loop is a module of its own and none imports another."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from ..audio.features import AudioFeatures
from ..config import EMOConfig
from ..models.attention import attention_score_budget
from ..portrait import Portrait
from . import clip_loop, context_windows, memo_memory, motion_frames
from .denoiser import LOW_VRAM_SCORE_BUDGET
from .steps import SamplingOptions, SamplingPipeline


@dataclass(frozen=True)
class Loop:
    iter_video: Callable[[SamplingPipeline, Portrait, AudioFeatures, SamplingOptions], Iterator[torch.Tensor]]
    conditions: type  # what each clip (or window) reads, built by the loop; also used to count its cost
    # what is wrong with a saved carry for the frames kept of a video (carry, frames kept, frames, options, the
    # model's config)
    carry_problem: Callable[[dict, int, int, SamplingOptions, EMOConfig], str | None]


LOOPS: dict[str, Loop] = {
    "motion_frames": Loop(motion_frames.iter_video, motion_frames.MotionFrameConditions, clip_loop.carry_problem),
    "memory": Loop(memo_memory.iter_video, memo_memory.MemoryConditions, clip_loop.carry_problem),
    "context_windows": Loop(context_windows.iter_video, context_windows.WindowConditions,
                            context_windows.carry_problem),
}


def loop_for(sampling: str) -> Loop:
    try:
        return LOOPS[sampling]
    except KeyError:
        raise ValueError(f"Unknown sampling loop {sampling!r}; choose one of {', '.join(LOOPS)}") from None


def iter_video(pipe: SamplingPipeline, portrait: Portrait, audio: AudioFeatures,
               opts: SamplingOptions) -> Iterator[torch.Tensor]:
    """The frames of the family's loop, in order as they are decoded (`opts` resolved: every field set).
    In low-VRAM mode no attention call holds its full score matrix."""
    with attention_score_budget(LOW_VRAM_SCORE_BUDGET if pipe.low_vram else None):
        yield from loop_for(pipe.config.spec.sampling).iter_video(pipe, portrait, audio, opts)
