"""The ±m neighbour window EMO uses for audio features and speed labels."""

from __future__ import annotations

import torch


def frame_windows(x: torch.Tensor, context: int, start: int = 0, end: int | None = None) -> torch.Tensor:
    """[B, F, ...] → [B, end-start, 2*context+1, ...]: frames start..end-1 of x, each with its
    ±context neighbours; indices are clamped to the ends of the whole sequence."""
    f = x.shape[1]
    end = f if end is None else end
    offsets = torch.arange(-context, context + 1, device=x.device)
    index = (torch.arange(start, end, device=x.device)[:, None] + offsets).clamp(0, f - 1)
    return x[:, index]
