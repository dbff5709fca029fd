"""Identity projection: a 512-d ArcFace face embedding → a few tokens for the UNets' attn2."""

from __future__ import annotations

import torch
from torch import nn


class IdentityProjection(nn.Module):
    def __init__(self, embed_dim: int, tokens: int, out_dim: int) -> None:
        super().__init__()
        self.tokens, self.out_dim = tokens, out_dim
        self.proj = nn.Linear(embed_dim, tokens * out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """embedding [B, embed_dim] → tokens [B, tokens, out_dim]."""
        return self.norm(self.proj(embedding).view(-1, self.tokens, self.out_dim))
