"""Face locator: a light conv encoder of the face-region mask, added to the Backbone after `conv_in`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FaceLocator(nn.Module):
    def __init__(self, out_channels: int, block_channels: tuple[int, ...] = (16, 32, 64, 128), in_channels: int = 3):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        for c_in, c_out in zip(block_channels[:-1], block_channels[1:]):
            self.blocks.append(nn.Conv2d(c_in, c_in, 3, padding=1))
            self.blocks.append(nn.Conv2d(c_in, c_out, 3, padding=1, stride=2))
        self.conv_out = nn.Conv2d(block_channels[-1], out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # starts as a no-op on the Backbone
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, region: torch.Tensor) -> torch.Tensor:
        """region [B, 3, H, W] in 0..1 (pixel resolution) → features [B, C, H/2^k, W/2^k] (k stride-2 convs: the VAE grid)."""
        x = F.silu(self.conv_in(region))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
