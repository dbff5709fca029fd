"""EMO's speed layers, first half: head-rotation speed → per-frame speed embedding.

Each frame's speed w is spread over d buckets (centre c_d, radius r_d) as
s_d = tanh((w - c_d) / r_d * 3); the vectors of the frame and its ±m neighbours are joined
and an MLP embeds them. The second half is the cross-attention inside the temporal modules.
"""

from __future__ import annotations

import torch
from torch import nn

from .frame_windows import frame_windows


def speed_buckets(speed: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """speed [..., F] → bucket encoding [..., F, d]."""
    return torch.tanh((speed.unsqueeze(-1) - centers) / radii * 3)


class SpeedEncoder(nn.Module):
    def __init__(self, centers: tuple[float, ...], radii: tuple[float, ...], context: int, embed_dim: int) -> None:
        super().__init__()
        self.context = context
        self.register_buffer("centers", torch.tensor(centers, dtype=torch.float32))
        self.register_buffer("radii", torch.tensor(radii, dtype=torch.float32))
        d = len(centers)
        self.mlp = nn.Sequential(
            nn.Linear(d * (2 * context + 1), embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )

    def forward(self, speed: torch.Tensor) -> torch.Tensor:
        """speed [B, F] (radians per frame) → embedding [B, F, embed_dim]."""
        buckets = speed_buckets(speed.float(), self.centers.float(), self.radii.float())
        windows = frame_windows(buckets, self.context).flatten(2)
        return self.mlp(windows.to(self.mlp[0].bias.dtype))  # bias: the weight may be stored in fp8
