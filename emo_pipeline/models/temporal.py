"""Temporal modules (AnimateDiff "Vanilla" motion modules), with EMO's optional speed cross-attention.

Self-attention runs along the frame axis of each spatial location: x goes from
[B*F, C, H, W] to [B*H*W, F, C]. Names follow AnimateDiff v2 so Hallo's weights load as they are.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import ProjectionCache, attend, make_attention


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

    def forward(self, x: torch.Tensor, queries_from: int = 0) -> torch.Tensor:
        """x [N, F, C] → [N, F - queries_from, C]: every frame is a key, only the later ones ask."""
        x = self.pos_encoder(x)
        return attend(self, x[:, queries_from:], x)


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

    def forward(self, x: torch.Tensor, speed: tuple[torch.Tensor, torch.Tensor] | None = None,
                drop: int = 0) -> torch.Tensor:
        """x [N, F, C] → [N, F - drop, C]; speed: projected keys/values [N, F_s, inner] or None.

        The first `drop` frames (motion frames) are keys of both self-attentions but their own
        outputs are thrown away by the caller, so the second attention's queries and everything
        after it skip them.
        """
        last = len(self.attention_blocks) - 1
        for i, (attention, norm) in enumerate(zip(self.attention_blocks, self.norms)):
            skip = drop if i == last else 0
            x = x[:, skip:] + attention(norm(x), queries_from=skip)
        if speed is not None and hasattr(self, "speed_attention"):
            x = x + attend(self.speed_attention, self.speed_norm(x), key_value=speed)
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

    def forward(self, x: torch.Tensor, num_frames: int, speed: torch.Tensor | None = None, drop: int = 0,
                cache: ProjectionCache | None = None) -> torch.Tensor:
        """x [B*F, C, H, W] → [B*(F - drop), C, H, W] (the first `drop` frames of each item
        left out); speed [B, F_s, C_s] or None."""
        bf, c, height, width = x.shape
        b, hw, kept = bf // num_frames, height * width, num_frames - drop
        h = self.norm(x).view(b, num_frames, c, hw).permute(0, 3, 1, 2)  # B, HW, F, C
        h = self.proj_in(h.reshape(b * hw, num_frames, c))
        speed_kv = None
        block = self.transformer_blocks[0]
        if speed is not None and hasattr(block, "speed_attention"):
            # projected once per item (and per clip, with a cache), then shared by its H*W locations
            attn = block.speed_attention
            k, v = cache.key_value(attn, speed) if cache is not None else (attn.to_k(speed), attn.to_v(speed))
            speed_kv = (k.repeat_interleave(hw, dim=0), v.repeat_interleave(hw, dim=0))
        for i, block in enumerate(self.transformer_blocks):
            h = block(h, speed_kv, drop if i == len(self.transformer_blocks) - 1 else 0)
        h = self.proj_out(h).view(b, hw, kept, c).permute(0, 2, 3, 1)
        residual = x.view(b, num_frames, c, height, width)[:, drop:]
        return h.reshape(b * kept, c, height, width) + residual.reshape(b * kept, c, height, width)


class TemporalModule(nn.Module):
    """Wrapper that keeps AnimateDiff's `temporal_transformer.` key prefix."""

    def __init__(self, channels: int, heads: int, max_len: int, groups: int, speed_dim: int = 0) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, heads, max_len, groups, speed_dim)

    def forward(self, x: torch.Tensor, num_frames: int, speed: torch.Tensor | None = None, drop: int = 0,
                cache: ProjectionCache | None = None) -> torch.Tensor:
        return self.temporal_transformer(x, num_frames, speed, drop, cache)
