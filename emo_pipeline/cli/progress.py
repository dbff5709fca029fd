"""A render's progress: on a terminal a tqdm bar (steps, time left, video seconds made per second of work); in a
log, a line per clip (per denoising step for context windows) with the same figures."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from ..sampling.steps import StepInfo


class RenderProgress:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.start(0.0)

    def start(self, video_seconds: float) -> None:
        """A new render of `video_seconds` of video; the clock starts now."""
        self.video_seconds, self.started, self.first_step, self.bar = video_seconds, time.perf_counter(), None, None

    def __call__(self, info: StepInfo) -> None:
        stream = self.stream or sys.stdout
        if self.first_step is None:  # a resumed render starts past step 0: its rate counts this run's steps
            self.first_step = info.step - 1
        done = info.step - self.first_step
        rate = done / max(time.perf_counter() - self.started, 1e-9)  # steps per second
        speed = rate * self.video_seconds / info.total_steps  # video seconds made per second
        if info.unit == "window":  # context windows: a step is one window's call
            steps = info.total_steps // info.total_clips
            text = f"  step {-(-info.step // info.total_clips)}/{steps}  window {info.clip + 1}/{info.total_clips}"
            line_done = info.clip == info.total_clips - 1
        else:
            text = f"  clip {info.clip + 1}/{info.total_clips}  step {info.step}/{info.total_steps}"
            line_done = info.step % (info.total_steps // info.total_clips) == 0  # a line per clip
        if stream.isatty():
            self._bar(info, text.strip(), speed, stream)
        elif line_done:
            left = (info.total_steps - info.step) / rate if rate > 0 else float("nan")
            print(f"{text}  {speed:.3f} video-s/s, {_clock(left)} left", file=stream, flush=True)

    def _bar(self, info: StepInfo, text: str, speed: float, stream: TextIO) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=info.total_steps, initial=self.first_step, unit="step", file=stream,
                            dynamic_ncols=True, bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                           "[{elapsed}<{remaining}{postfix}]")
        self.bar.set_description_str(text, refresh=False)
        self.bar.set_postfix_str(f"{speed:.3f} video-s/s", refresh=False)
        self.bar.update(info.step - self.bar.n)
        if info.step == info.total_steps:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan: no rate yet
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"
