"""The ±m neighbour window EMO uses for audio features and speed labels."""

from __future__ import annotations

import torch


def frame_windows(x: torch.Tensor, context: int) -> torch.Tensor:
    """[B, F, ...] → [B, F, 2*context+1, ...]: each frame with its neighbours, clamped at the ends."""
    f = x.shape[1]
    offsets = torch.arange(-context, context + 1, device=x.device)
    index = (torch.arange(f, device=x.device)[:, None] + offsets).clamp(0, f - 1)
    return x[:, index]
