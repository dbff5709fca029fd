"""Audio projection: a window of stacked wav2vec layers per frame → that frame's audio tokens."""

from __future__ import annotations

import torch
from torch import nn


class AudioProjection(nn.Module):
    def __init__(self, window: int, layers: int, channels: int, hidden: int, tokens: int, out_dim: int) -> None:
        super().__init__()
        self.tokens, self.out_dim = tokens, out_dim
        self.proj1 = nn.Linear(window * layers * channels, hidden)
        self.proj2 = nn.Linear(hidden, hidden)
        self.proj3 = nn.Linear(hidden, tokens * out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [B, F, window, layers, channels] → tokens [B, F, tokens, out_dim]."""
        b, f = windows.shape[:2]
        x = windows.reshape(b * f, -1)
        x = torch.relu(self.proj1(x))
        x = torch.relu(self.proj2(x))
        x = self.proj3(x).view(b * f, self.tokens, self.out_dim)
        return self.norm(x).view(b, f, self.tokens, self.out_dim)
