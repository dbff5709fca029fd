"""Multi-head attention on diffusers' `Attention` parameters, with room for extra key/value tokens.

Reference attention appends the ReferenceNet's tokens to the self-attention keys and values.
Those tokens are the same for every frame and every denoising step of a clip, so their key and
value projections are computed once per clip (`project_reference`) and only expanded per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def attend(
    attn: Attention,
    hidden_states: torch.Tensor,
    context: torch.Tensor | None = None,
    extra_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of `hidden_states` [B, N, C] over `context` (itself when None).

    `extra_key_value` holds already projected keys and values [B, M, inner] appended after
    the context's own.
    """
    context = hidden_states if context is None else context
    query = attn.to_q(hidden_states)
    key = attn.to_k(context)
    value = attn.to_v(context)
    if extra_key_value is not None:
        key = torch.cat([key, extra_key_value[0]], dim=1)
        value = torch.cat([value, extra_key_value[1]], dim=1)
    heads = attn.heads
    out = F.scaled_dot_product_attention(
        _split_heads(query, heads), _split_heads(key, heads), _split_heads(value, heads)
    )
    b, _, n, d = out.shape
    out = out.transpose(1, 2).reshape(b, n, heads * d)
    return attn.to_out[1](attn.to_out[0](out))


def project_reference(attn: Attention, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value projections of reference tokens [B, M, C], reused across frames and steps."""
    return attn.to_k(tokens), attn.to_v(tokens)


def make_attention(dim: int, heads: int, context_dim: int | None = None) -> Attention:
    """SD1.5-style attention: no q/k/v bias, biased output projection."""
    return Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, bias=False)
