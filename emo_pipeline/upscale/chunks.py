"""Temporal chunks for the CodeFormer: windows of `chunk` frames that overlap by `overlap`, streamed.

The spans are Hallo2's (scripts/video_sr.py): [0, 16), [12, 28), [24, 40), ..., the last one shorter.
In an overlap, Hallo2 keeps the earlier chunk's frames (`mode="hallo2"`); by default ("linear") the two
chunks' restorations of those frames are cross-faded, the later one's weight rising (j+1)/(k+1) over
the k shared frames, so a chunk boundary does not jump. Only one window of frames is held at a time, so
memory does not grow with the video's length.
"""

from __future__ import annotations

from itertools import islice
from typing import Any, Callable, Iterable, Iterator

import torch

CHUNK, OVERLAP = 16, 4  # Hallo2's
BLEND_MODES = ("linear", "hallo2")


def chunk_spans(frames: int, chunk: int = CHUNK, overlap: int = OVERLAP) -> list[tuple[int, int]]:
    """The [start, end) of every chunk of a `frames`-frame video, as Hallo2's loop makes them."""
    check_chunking(chunk, overlap)
    spans, start = [], 0
    while start < frames:
        end = min(start + chunk, frames)
        spans.append((start, end))
        if end == frames:
            break
        start = end - overlap
    return spans


def check_chunking(chunk: int, overlap: int, mode: str = "linear") -> None:
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1 frame, not {chunk}.")
    if not 0 <= overlap <= chunk // 2:  # a frame is then in at most two chunks
        raise ValueError(f"overlap must be from 0 to half the chunk ({chunk // 2} of {chunk} frames), not {overlap}.")
    if mode not in BLEND_MODES:
        raise ValueError(f"blend mode must be one of {', '.join(BLEND_MODES)}, not {mode!r}.")


def overlap_weight(j: int, k: int, mode: str = "linear") -> float:
    """The later chunk's weight for the j-th of k shared frames."""
    return (j + 1) / (k + 1) if mode == "linear" else 0.0


def blend_chunks(items: Iterable[tuple[Any, torch.Tensor]], restore: Callable[[torch.Tensor], torch.Tensor],
                 chunk: int = CHUNK, overlap: int = OVERLAP, mode: str = "linear") -> Iterator[tuple[Any, torch.Tensor]]:
    """(payload, input) pairs, one per frame, in order → (payload, result) pairs, in order, where
    `restore` maps a stacked window of inputs [f, ...] to results [f, ...]. A frame's result is given as
    soon as no later window can change it."""
    check_chunking(chunk, overlap, mode)
    frames = iter(items)
    carried: list[tuple[Any, torch.Tensor]] = []  # the last window's shared frames: inputs ...
    carried_out: list[torch.Tensor] = []  # ... and that window's results for them
    while True:
        new = list(islice(frames, chunk - len(carried)))
        if not new:  # the video ended on a window's end: its shared frames are final as they are
            yield from ((payload, out) for (payload, _), out in zip(carried, carried_out))
            return
        window = carried + new
        results = restore(torch.stack([x for _, x in window]))
        k = len(carried)
        for j in range(k):
            wt = overlap_weight(j, k, mode)
            yield window[j][0], carried_out[j] * (1 - wt) + results[j] * wt if wt else carried_out[j]
        ended = len(window) < chunk
        keep = 0 if ended else overlap
        for j in range(k, len(window) - keep):
            yield window[j][0], results[j]
        if ended:
            return
        carried, carried_out = window[len(window) - keep:], list(results[len(window) - keep:])
