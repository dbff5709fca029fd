"""The command line's render progress: a tqdm bar with time left and video seconds per second on a terminal, a line
per clip (or per denoising step of context windows) with the same figures in a log."""

import io
import re

from emo_pipeline.cli.progress import RenderProgress
from emo_pipeline.sampling.steps import StepInfo


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def clip_steps(clips: int, steps: int, first_clip: int = 0):
    for clip in range(first_clip, clips):
        for step in range(steps):
            yield StepInfo(clip * steps + step + 1, clips * steps, clip, clips, 999 - step)


def test_a_log_gets_one_line_per_clip_with_speed_and_time_left():
    log = io.StringIO()
    progress = RenderProgress(log)
    progress.start(4.0)
    for info in clip_steps(clips=3, steps=2):
        progress(info)
    lines = log.getvalue().splitlines()
    assert [line[:20] for line in lines] == ["  clip 1/3  step 2/6", "  clip 2/3  step 4/6", "  clip 3/3  step 6/6"]
    for line in lines:
        assert re.fullmatch(r"  clip \d/3  step \d/6  \d+\.\d{3} video-s/s, \d+:\d\d left", line), line
    assert lines[-1].endswith(", 0:00 left")


def test_context_windows_get_a_line_per_denoising_step():
    log = io.StringIO()
    progress = RenderProgress(log)
    progress.start(1.0)
    windows, steps = 3, 2
    for call in range(1, windows * steps + 1):
        progress(StepInfo(call, windows * steps, (call - 1) % windows, windows, 500, "window"))
    lines = log.getvalue().splitlines()
    assert [line[:22] for line in lines] == ["  step 1/2  window 3/3", "  step 2/2  window 3/3"]


def test_a_terminal_gets_a_bar_that_a_resumed_render_starts_part_way():
    screen = Terminal()
    progress = RenderProgress(screen)
    progress.start(4.0)
    for info in clip_steps(clips=3, steps=2, first_clip=1):  # clip 1 was kept by an earlier run
        progress(info)
    shown = screen.getvalue()
    assert "\r" in shown and "clip 3/3  step 6/6" in shown and "video-s/s" in shown
    assert re.search(r"6/6 \[\d\d:\d\d<\d\d:\d\d, \d+\.\d{3} video-s/s\]", shown), shown
    assert "2/6" in shown and "1/6" not in shown  # started at the kept clip's steps
    assert progress.bar is None  # closed at the last step
