"""Temporal modules (AnimateDiff "Vanilla" motion modules), with EMO's optional speed cross-attention.

Self-attention runs along the frame axis of each spatial location: x goes from
[B*F, C, H, W] to [B*H*W, F, C]. Names follow AnimateDiff v2 so Hallo's weights load as they are.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import attend, make_attention


class PositionalEncoding(nn.Module):
    """Sinusoidal frame-position encoding, stored as a buffer (it is part of Hallo's state dict)."""

    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(1, max_len, dim)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Frame-axis self-attention; position encoding is added to its input, as AnimateDiff does."""

    def __init__(self, dim: int, heads: int, max_len: int) -> None:
        super().__init__()
        attn = make_attention(dim, heads)
        self.to_q, self.to_k, self.to_v, self.to_out = attn.to_q, attn.to_k, attn.to_v, attn.to_out
        self.heads = heads
        self.pos_encoder = PositionalEncoding(dim, max_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return attend(self, self.pos_encoder(x))


class TemporalTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, max_len: int, speed_dim: int = 0) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList([TemporalAttention(dim, heads, max_len) for _ in range(2)])
        self.norms = nn.ModuleList([nn.LayerNorm(dim) for _ in range(2)])
        if speed_dim:
            # EMO's speed layers: cross-attention from each location's frame sequence to the
            # per-frame speed embeddings. Zero-initialised output, so it starts as a no-op.
            self.speed_norm = nn.LayerNorm(dim)
            self.speed_attention = make_attention(dim, heads, speed_dim)
            nn.init.zeros_(self.speed_attention.to_out[0].weight)
            nn.init.zeros_(self.speed_attention.to_out[0].bias)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, speed: torch.Tensor | None = None) -> torch.Tensor:
        """x [B*H*W, F, C]; speed [B*H*W, F_s, C_s] or None."""
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = x + attention(norm(x))
        if speed is not None and hasattr(self, "speed_attention"):
            x = x + attend(self.speed_attention, self.speed_norm(x), speed)
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, heads: int, max_len: int, groups: int, speed_dim: int = 0) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalTransformerBlock(channels, heads, max_len, speed_dim)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, speed: torch.Tensor | None = None) -> torch.Tensor:
        """x [B*F, C, H, W] → same shape; speed [B, F_s, C_s] or None."""
        bf, c, height, width = x.shape
        b = bf // num_frames
        h = self.norm(x).view(b, num_frames, c, height * width).permute(0, 3, 1, 2)  # B, HW, F, C
        h = self.proj_in(h.reshape(b * height * width, num_frames, c))
        if speed is not None:
            speed = speed.repeat_interleave(height * width, dim=0)
        for block in self.transformer_blocks:
            h = block(h, speed)
        h = self.proj_out(h).view(b, height * width, num_frames, c).permute(0, 2, 3, 1)
        return h.reshape(bf, c, height, width) + x


class TemporalModule(nn.Module):
    """Wrapper that keeps AnimateDiff's `temporal_transformer.` key prefix."""

    def __init__(self, channels: int, heads: int, max_len: int, groups: int, speed_dim: int = 0) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_len, groups, speed_dim)

    def forward(self, x: torch.Tensor, num_frames: int, speed: torch.Tensor | None = None) -> torch.Tensor:
        return self.temporal_transformer(x, num_frames, speed)
