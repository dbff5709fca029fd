"""Named sampling presets and the per-step plan they give.

`quality` is Hallo's own sampling (40 DDIM steps, guidance on every step) and equals the exact
default. The faster presets trade some fidelity for time, each in a way that is said plainly:
a multistep solver with fewer steps, and DeepCache-style reuse of the low-resolution features
between neighbouring steps. Guidance on a limited interval of steps is a knob of its own (it
costs lip sync: the audio reaches the video through guidance). What each costs in fidelity is
measured by benchmarks/fidelity.py and stated in docs/speed-and-memory.md.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..families import EMOTIONS
from .schedulers import check_scheduler, default_scheduler
from .steps import SamplingOptions

if TYPE_CHECKING:
    from ..config import EMOConfig


@dataclass(frozen=True)
class Preset:
    scheduler: str | None  # None: the model's own (DDIM, or flow-matching Euler for MEMO)
    steps: int | None  # None: the model's own
    guidance_interval: tuple[float, float]
    cache_interval: int
    summary: str


PRESETS: dict[str, Preset] = {
    "quality": Preset(None, None, (0.0, 1.0), 1,
                      "the model's own sampling: its sampler and steps (DDIM 40 Hallo, 30 EchoMimic; flow-matching "
                      "Euler 20 MEMO), guidance on every step"),
    "balanced": Preset("dpmpp_2m", 20, (0.0, 1.0), 1, "20 DPM-Solver++ 2M steps, guidance on every step"),
    # Guidance stays on every step: on the demo model, guiding only the first half of 12 UniPC steps
    # cost 0.085 of lip-sync r, while reusing deep features cost 0.001 (benchmarks/fidelity.py).
    "fast": Preset("unipc", 12, (0.0, 1.0), 2, "12 UniPC steps, deep features reused every other step"),
}


def resolve_options(options: SamplingOptions, config: "EMOConfig") -> SamplingOptions:
    """Every field set: the options' own values first, then the preset's, then the exact default."""
    preset = None
    if options.preset is not None:
        try:
            preset = PRESETS[options.preset]
        except KeyError:
            raise ValueError(f"Unknown preset {options.preset!r}; choose one of {', '.join(PRESETS)}") from None

    def pick(value, preset_value, default):
        if value is not None:
            return value
        return preset_value if preset is not None else default

    windows = config.spec.sampling == "context_windows"
    if windows and options.cache_interval not in (None, 1):
        raise ValueError(f"{config.spec.title} models sample the whole video in several context windows a step, "
                         "whose deep features would have to be kept for every window: DeepCache is not offered for "
                         "them; set cache_interval to 1.")
    resolved = dataclasses.replace(
        options,
        steps=pick(options.steps, preset and preset.steps, config.steps) or config.steps,
        scheduler=pick(options.scheduler, preset and preset.scheduler, None) or default_scheduler(config.scheduler),
        guidance_interval=tuple(pick(options.guidance_interval, preset and preset.guidance_interval, (0.0, 1.0))),
        cache_interval=1 if windows else pick(options.cache_interval, preset and preset.cache_interval, 1),
        guidance_scale=config.guidance_scale if options.guidance_scale is None else options.guidance_scale,
        frames_per_clip=options.frames_per_clip or config.frames_per_clip,
        motion_frames=config.motion_frames if options.motion_frames is None else options.motion_frames,
        context_overlap=config.spec.context_overlap if options.context_overlap is None else options.context_overlap,
    )
    check_options(resolved)
    check_scheduler(resolved.scheduler, config.scheduler)
    return resolved


def check_options(options: SamplingOptions) -> None:
    problems = []
    if options.steps < 1:
        problems.append(f"steps must be at least 1, not {options.steps}")
    if not math.isfinite(options.guidance_scale) or options.guidance_scale < 0:
        problems.append(f"the guidance scale (cfg) must be a finite number of 0 or more, not {options.guidance_scale}")
    start, end = options.guidance_interval
    if not 0.0 <= start <= end <= 1.0:
        problems.append(f"guidance_interval must be (start, end) with 0 <= start <= end <= 1, not {(start, end)}")
    if options.cache_interval < 1:
        problems.append(f"cache_interval must be 1 (off) or more, not {options.cache_interval}")
    if options.motion_frames < 0:
        problems.append("motion_frames must be 0 or more")
    if not 0 <= options.context_overlap < max(options.frames_per_clip, 1):
        problems.append(f"context_overlap must be 0 or more and less than the window ({options.frames_per_clip} "
                        f"frames), not {options.context_overlap}")
    emotions = [options.emotion] if options.emotion is None or isinstance(options.emotion, str) else options.emotion
    unknown = [e for e in emotions if e is not None and e not in EMOTIONS]
    if "auto" in unknown:
        problems.append("emotion 'auto' is detected from the audio before sampling (audio/emotion.py: "
                        "EmotionDetector.clips), then given per clip")
    elif unknown:
        problems.append(f"Unknown emotion {unknown[0]!r}; choose one of {', '.join(EMOTIONS)}")
    if problems:
        raise ValueError("Invalid sampling options: " + "; ".join(problems))


def step_plan(steps: int, use_cfg: bool, guidance_interval: tuple[float, float],
              cache_interval: int) -> list[tuple[bool, bool]]:
    """(guided, reuse deep features) for each step. Step i is guided when i/steps lies in the
    interval (the end step included when the interval reaches 1); every `cache_interval`-th step,
    starting with the first, is a full pass and the others reuse it."""
    start, end = guidance_interval
    plan = []
    for i in range(steps):
        position = i / steps
        guided = use_cfg and start <= position and (position < end or end >= 1.0)
        reuse = cache_interval > 1 and i % cache_interval != 0
        plan.append((guided, reuse))
    return plan
