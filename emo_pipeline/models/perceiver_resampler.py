"""Perceiver resampler: a few learned query tokens read a sequence through cross-attention, layer after layer.

IP-Adapter's Resampler in the form V-Express's audio projection has it (its `audio_projection.bin`): per video
frame, the 10 wav2vec2 tokens of frames i-2 … i+2 (audio/token_windows.py) become 5 tokens of the denoising
UNet's cross-attention width.

    x   = proj_in(x + pos_emb[:S])                  learned positions added before the input projection
    lat = latents (learned [1, Q, dim]) for every row
    depth × ( lat = attn(x, lat) + lat ;  lat = ff(lat) + lat )
    out = norm_out(proj_out(lat))                    [N, Q, output_dim]

attn: queries from the layer-normed latents; keys and values from the layer-normed inputs and latents side by
side (S + Q keys); `heads` heads of `dim_head`, softmax scale dim_head^-1/2; no biases. ff: LayerNorm, Linear
(dim → ff_mult·dim, no bias), exact GELU, Linear back (no bias).

The parameters carry V-Express's names (pos_emb, latents, proj_in, proj_out, norm_out, layers.<i>.0 the
attention with norm1 (inputs), norm2 (latents), to_q, to_kv, to_out; layers.<i>.1.0/1/3 the feed-forward), so
its file loads strictly. The shapes come from a `PerceiverResamplerConfig` (V-Express's values by default).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PerceiverResamplerConfig:
    """The resampler's shapes, named as V-Express's AudioProjection arguments; the defaults are what its
    inference.py builds (num_pad_audio_frames 2: 5 queries over windows of 10 tokens)."""

    dim: int = 768  # the latents' width
    depth: int = 4
    dim_head: int = 64
    heads: int = 12
    num_queries: int = 5
    embedding_dim: int = 768  # the input tokens' width
    output_dim: int = 768
    ff_mult: int = 4
    max_seq_len: int = 10  # the longest input sequence (learned positions)


class PerceiverAttention(nn.Module):
    """The latents attend to the inputs and to themselves."""

    def __init__(self, dim: int, dim_head: int, heads: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        inner = dim_head * heads
        self.norm1 = nn.LayerNorm(dim)  # the inputs
        self.norm2 = nn.LayerNorm(dim)  # the latents
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x [N, S, dim], latents [N, Q, dim] → the attention's output for the latents [N, Q, dim]."""
        x, latents = self.norm1(x), self.norm2(latents)
        n, q_len, _ = latents.shape
        q = self._heads(self.to_q(latents))
        k, v = (self._heads(t) for t in self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1))
        out = F.scaled_dot_product_attention(q, k, v)  # scale dim_head^-1/2
        return self.to_out(out.transpose(1, 2).reshape(n, q_len, self.heads * self.dim_head))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(t.shape[0], t.shape[1], self.heads, self.dim_head).transpose(1, 2)


class FeedForward(nn.Sequential):
    """LayerNorm, Linear up (no bias), exact GELU, Linear down (no bias): indices 0, 1, 2, 3."""

    def __init__(self, dim: int, mult: int) -> None:
        super().__init__(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverResampler(nn.Module):
    def __init__(self, config: PerceiverResamplerConfig | None = None, **shapes: int) -> None:
        """From a config, or from its fields by name (the rest at V-Express's values)."""
        super().__init__()
        if config is not None and shapes:
            raise TypeError("give a PerceiverResamplerConfig or its fields by name, not both")
        self.config = config or PerceiverResamplerConfig(**shapes)
        c = self.config
        self.pos_emb = nn.Embedding(c.max_seq_len, c.embedding_dim)
        self.latents = nn.Parameter(torch.randn(1, c.num_queries, c.dim) / c.dim ** 0.5)
        self.proj_in = nn.Linear(c.embedding_dim, c.dim)
        self.proj_out = nn.Linear(c.dim, c.output_dim)
        self.norm_out = nn.LayerNorm(c.output_dim)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(c.dim, c.dim_head, c.heads), FeedForward(c.dim, c.ff_mult)])
            for _ in range(c.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, S, embedding_dim] (S <= max_seq_len) → [N, num_queries, output_dim]."""
        if x.ndim != 3 or x.shape[2] != self.config.embedding_dim or not 0 < x.shape[1] <= self.config.max_seq_len:
            raise ValueError(f"the resampler takes [rows, up to {self.config.max_seq_len} tokens, "
                             f"{self.config.embedding_dim}]; got {tuple(x.shape)}")
        x = self.proj_in(x + self.pos_emb.weight[: x.shape[1]])
        latents = self.latents.expand(x.shape[0], -1, -1)
        for attention, feed_forward in self.layers:
            latents = attention(x, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())
