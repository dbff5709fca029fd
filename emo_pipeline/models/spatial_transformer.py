"""The spatial transformer of both UNets, with EMO's reference attention.

In the ReferenceNet it is an ordinary SD1.5 transformer whose LayerNorm'd self-attention input
(`norm1` output) is handed out as the reference feature of that block. In the Backbone the same
block appends those reference tokens to its self-attention keys and values (Hallo's form of
EMO's reference-attention), and attn2 reads the identity tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import attend, make_attention


@dataclass
class ReferenceKV:
    """Projected reference keys/values for the rows of a batch that attend to the reference."""

    key: torch.Tensor  # [R, M, inner]
    value: torch.Tensor  # [R, M, inner]
    rows: torch.Tensor | None = None  # bool [N]; None means every row


class ReferenceTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = make_attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = make_attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, reference: ReferenceKV | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        if reference is None:
            x = x + attend(self.attn1, h)
        elif reference.rows is None:
            x = x + attend(self.attn1, h, extra_key_value=(reference.key, reference.value))
        else:
            rows = reference.rows
            out = torch.empty_like(x)
            out[rows] = attend(self.attn1, h[rows], extra_key_value=(reference.key, reference.value))
            if (~rows).any():
                out[~rows] = attend(self.attn1, h[~rows])
            x = x + out
        x = x + attend(self.attn2, self.norm2(x), context)
        x = x + self.ff(self.norm3(x))
        return x, h


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 projection in, one transformer block, 1x1 projection out, residual."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([ReferenceTransformerBlock(channels, heads, context_dim)])
        self.proj_out = nn.Conv2d(channels, channels, 1)

    @property
    def block(self) -> ReferenceTransformerBlock:
        return self.transformer_blocks[0]

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, reference: ReferenceKV | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C, H, W], context [N, T, Cc] → (x, reference feature [N, H, W, C])."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, c)
        h, feature = self.block(h, context, reference)
        # contiguous: a channels-last result here crashes GroupNorm's CPU backward in torch 2.13
        h = h.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x, feature.view(n, height, width, c)
