"""Audio-attention: cross-attention from the latent tokens of each frame to that frame's audio tokens.

EMO adds it after each reference-attention block. Hallo's trained form ("masked") splits it into
three cross-attentions whose outputs are weighted by the background (full), face and lip masks
at the block's resolution, each through a zero-initialised 1x1 conv; EMO's plain form is one
cross-attention. JoyHallo's ("shared", its family's switch) keeps the three masks and zero convs but
computes one cross-attention (attn2_0) whose output all three read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import ProjectionCache, attend, make_attention, row_runs
from .fp8 import compute_weight


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
    return F.linear(x, compute_weight(conv, x.dtype).flatten(1), conv.bias)


class AudioTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, audio_dim: int, masked: bool, shared: bool = False) -> None:
        """`shared` (with `masked`): JoyHallo's block, one cross-attention for the three masked branches."""
        super().__init__()
        self.masked, self.shared = masked, masked and shared
        if masked:
            self.zero_conv_full = _zero_conv(dim)
            self.zero_conv_face = _zero_conv(dim)
            self.zero_conv_lip = _zero_conv(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = make_attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        if masked:
            self.attn2_0 = make_attention(dim, heads, audio_dim)
            if not self.shared:
                self.attn2_1 = make_attention(dim, heads, audio_dim)
                self.attn2_2 = make_attention(dim, heads, audio_dim)
        else:
            self.attn2 = make_attention(dim, heads, audio_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def _branches(self, masks: RegionMasks | None, region_weights: tuple[float, float, float]):
        """(attention, zero conv, mask, weight) of each audio branch."""
        if not self.masked:
            return [(self.attn2, None, None, 1.0)]
        if masks is None:
            raise ValueError("This model's audio attention needs face/lip/background masks")
        full_w, face_w, lip_w = region_weights
        face_attn, lip_attn = (self.attn2_0, self.attn2_0) if self.shared else (self.attn2_1, self.attn2_2)
        return [(self.attn2_0, self.zero_conv_full, masks.full, full_w),
                (face_attn, self.zero_conv_face, masks.face, face_w),
                (lip_attn, self.zero_conv_lip, masks.lip, lip_w)]

    def _heard(self, h: torch.Tensor, audio: "FrameAudio", rows: slice, branches) -> torch.Tensor:
        out, attended = None, {}
        for attn, conv, mask, weight in branches:
            if attn in attended:  # JoyHallo's branches share one attention: computed once
                y = attended[attn]
            else:
                key_value = audio.cache.key_value(attn, audio.tokens[rows], (rows.start, rows.stop)) \
                    if audio.cache is not None else None
                y = attended[attn] = attend(attn, h, audio.tokens[rows], key_value=key_value)
            if conv is not None:
                y = weight * _pointwise(conv, y * _per_token(_rows_of(mask, rows)))
            out = y if out is None else out + y
        return out

    @staticmethod
    def _silent(h: torch.Tensor, rows: slice, branches) -> torch.Tensor:
        """What the audio branches give rows without audio. Zero audio tokens have zero keys and
        values (the projections have no bias), so each branch returns its output bias b whatever
        the query; through the mask and zero conv (W, c) that is mask · (W b) + c per token."""
        out = None
        for attn, conv, mask, weight in branches:
            bias = attn.to_out[0].bias
            if conv is None:
                y = bias.expand_as(h)
            else:
                y = weight * (_per_token(_rows_of(mask, rows)) * (compute_weight(conv, bias.dtype).flatten(1) @ bias) + conv.bias)
            out = y if out is None else out + y
        return out.expand_as(h)

    def forward(
        self,
        x: torch.Tensor,
        audio: "FrameAudio",
        masks: RegionMasks | None,
        region_weights: tuple[float, float, float],
    ) -> torch.Tensor:
        x = x + attend(self.attn1, self.norm1(x))
        h = self.norm2(x)
        branches = self._branches(masks, region_weights)
        heard = audio.heard or (True,) * len(x)
        parts = []
        for start, end, hears in row_runs(heard):
            rows = slice(start, end)
            parts.append(self._heard(h[rows], audio, rows, branches) if hears else self._silent(h[rows], rows, branches))
        x = x + (parts[0] if len(parts) == 1 else torch.cat(parts))
        return x + self.ff(self.norm3(x))


def _rows_of(mask: torch.Tensor, rows: slice) -> torch.Tensor:
    return mask if mask.ndim == 1 else mask[rows]


@dataclass
class FrameAudio:
    """The audio tokens of every frame row [N, T, C] as the audio attention reads them.

    `heard[r]` False marks rows that get no audio (guidance's unconditional rows: Hallo zeroes
    their tokens), computed as the constant that zero tokens give; None means every row hears.
    `cache` keeps the tokens' key/value projections for the clip.
    """

    tokens: torch.Tensor
    heard: tuple[bool, ...] | None = None
    cache: ProjectionCache | None = None


class AudioAttention(nn.Module):
    """GroupNorm, projection to `inner` channels, one audio transformer block, projection back, residual.

    `inner` differs from `channels` in some blocks of Hallo's checkpoint (it is the block's
    input width there), so it is a parameter of its own.
    """

    def __init__(self, channels: int, inner: int, heads: int, audio_dim: int, groups: int, masked: bool,
                 shared: bool = False) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([AudioTransformerBlock(inner, heads, audio_dim, masked, shared)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(
        self,
        x: torch.Tensor,
        audio: FrameAudio,
        masks: RegionMasks | None = None,
        region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ) -> torch.Tensor:
        """x [N, C, H, W] with N = batch*frames, audio tokens [N, T, Ca]."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, inner)
        h = self.transformer_blocks[0](h, audio, masks, region_weights)
        h = h.reshape(n, height, width, inner).permute(0, 3, 1, 2).contiguous()  # see SpatialTransformer
        return self.proj_out(h) + x
