"""Audio-attention: cross-attention from the latent tokens of each frame to that frame's audio tokens.

EMO adds it after each reference-attention block. Hallo's trained form ("masked") splits it into
three cross-attentions whose outputs are weighted by the background (full), face and lip masks
at the block's resolution, each through a zero-initialised 1x1 conv; EMO's plain form is one
cross-attention.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import attend, make_attention


@dataclass
class RegionMasks:
    """Flattened masks at one latent resolution (background, face without lips, lips): [H*W] for
    every row alike, or [N, H*W] with one per batch row."""

    full: torch.Tensor
    face: torch.Tensor
    lip: torch.Tensor


def _per_token(mask: torch.Tensor) -> torch.Tensor:
    return mask[None, :, None] if mask.ndim == 1 else mask[:, :, None]


def _zero_conv(dim: int) -> nn.Conv2d:
    conv = nn.Conv2d(dim, dim, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _pointwise(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    # A 1x1 conv over [N, H*W, C] tokens is a linear map of the channels: no reshape to a square grid.
    return F.linear(x, conv.weight.flatten(1), conv.bias)


class AudioTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, audio_dim: int, masked: bool) -> None:
        super().__init__()
        self.masked = masked
        if masked:
            self.zero_conv_full = _zero_conv(dim)
            self.zero_conv_face = _zero_conv(dim)
            self.zero_conv_lip = _zero_conv(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = make_attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        if masked:
            self.attn2_0 = make_attention(dim, heads, audio_dim)
            self.attn2_1 = make_attention(dim, heads, audio_dim)
            self.attn2_2 = make_attention(dim, heads, audio_dim)
        else:
            self.attn2 = make_attention(dim, heads, audio_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self,
        x: torch.Tensor,
        audio: torch.Tensor,
        masks: RegionMasks | None,
        region_weights: tuple[float, float, float],
    ) -> torch.Tensor:
        x = x + attend(self.attn1, self.norm1(x))
        h = self.norm2(x)
        if not self.masked:
            x = x + attend(self.attn2, h, audio)
        else:
            if masks is None:
                raise ValueError("This model's audio attention needs face/lip/background masks")
            full_w, face_w, lip_w = region_weights
            full = _pointwise(self.zero_conv_full, attend(self.attn2_0, h, audio) * _per_token(masks.full))
            face = _pointwise(self.zero_conv_face, attend(self.attn2_1, h, audio) * _per_token(masks.face))
            lip = _pointwise(self.zero_conv_lip, attend(self.attn2_2, h, audio) * _per_token(masks.lip))
            x = full_w * full + face_w * face + lip_w * lip + x
        return x + self.ff(self.norm3(x))


class AudioAttention(nn.Module):
    """GroupNorm, projection to `inner` channels, one audio transformer block, projection back, residual.

    `inner` differs from `channels` in some blocks of Hallo's checkpoint (it is the block's
    input width there), so it is a parameter of its own.
    """

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int, masked: bool) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([AudioTransformerBlock(inner, heads, audio_dim, masked)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        audio: torch.Tensor,
        masks: RegionMasks | None = None,
        region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> torch.Tensor:
        """x [N, C, H, W] with N = batch*frames, audio [N, T, Ca]."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, inner)
        h = self.transformer_blocks[0](h, audio, masks, region_weights)
        h = h.reshape(n, height, width, inner).permute(0, 3, 1, 2).contiguous()  # see SpatialTransformer
        return self.proj_out(h) + x
