"""V-Express's anti-flicker filter: every value of the video replaced by the median of its 3×3×3 neighbourhood
over time, rows and columns (27 values), the video reflect-padded by one at each end of all three axes
(pipelines/utils.py `median_filter_3d`, applied to the decoded [0, 1] frames before saving).

Here it runs on the frames as they stream out of the decoder: a frame is filtered once the frame after it is
decoded, so the loop holds two frames more than a chunk, never the whole video. Rendering resumed after frame k
decodes frame k - 1 again to give frame k its neighbour.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from einops import rearrange


def median_3x3x3(before: torch.Tensor, frames: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """frames [N, H, W, C] with the frame before the first and the one after the last ([H, W, C] each) → the
    filtered frames [N, H, W, C]. Rows and columns are reflect-padded; time is whatever the caller passes."""
    video = torch.cat([before[None], frames, after[None]])  # N + 2, H, W, C
    planes = F.pad(rearrange(video, "t h w c -> (t c) h w")[None], (1, 1, 1, 1), mode="reflect")[0]
    planes = rearrange(planes, "(t c) h w -> c t h w", c=video.shape[-1])
    out = []
    for i in range(frames.shape[0]):
        cube = planes[:, i: i + 3]  # C, 3, H + 2, W + 2
        # the 27 neighbours of every pixel, side by side: C, 3·3·3, H, W
        stack = torch.stack([cube[:, dt, dy: dy + frames.shape[1], dx: dx + frames.shape[2]]
                             for dt in range(3) for dy in range(3) for dx in range(3)], dim=1)
        out.append(rearrange(stack.median(dim=1).values, "c h w -> h w c"))
    return torch.stack(out)


def median_filtered(chunks: Iterable[torch.Tensor], before: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """Frames [N, H, W, C] in order, chunk by chunk → the same frames filtered, chunk by chunk (each output chunk
    one frame behind its input; the last frame comes with the last chunk). `before`: the unfiltered frame before
    the first (a resumed render's); None at the video's start, where the reflection gives frame 1."""
    held: torch.Tensor | None = None  # decoded frames not yet filtered (they wait for their next frame)
    for chunk in chunks:
        held = chunk if held is None else torch.cat([held, chunk])
        if held.shape[0] < 2:
            continue
        first = before if before is not None else held[1]  # reflect: frame -1 is frame 1
        yield median_3x3x3(first, held[:-1], held[-1])
        before, held = held[-2], held[-1:]
    if held is None:
        return
    last = held[-1]
    # reflect at the end: the frame after the last is the one before it (a one-frame video is its own neighbour)
    after = before if before is not None else last
    first = before if before is not None else last
    yield median_3x3x3(first, held, after)
