"""Multi-head attention on diffusers' `Attention` parameters, with room for extra key/value tokens.

Reference attention appends the ReferenceNet's tokens to the self-attention keys and values.
Cross-attention contexts that stay the same for a whole clip (identity, audio and speed tokens)
have their key/value projections computed once per clip (`ProjectionCache`) instead of at
every denoising step.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

# Low-VRAM mode caps the attention score elements one kernel call may need, so that even a
# backend that materialises the scores (SDPA's math path) never holds the full matrix.
_score_budget: int | None = None


@contextmanager
def attention_score_budget(elements: int | None) -> Iterator[None]:
    """Within the block, split attention calls so no call needs more than `elements` scores."""
    global _score_budget
    previous, _score_budget = _score_budget, elements
    try:
        yield
    finally:
        _score_budget = previous


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """SDPA on [B, H, N, d]; within a score budget, in pieces of rows and then of queries (exact:
    softmax runs per query)."""
    b, heads, n, _ = query.shape
    m = key.shape[2]
    if _score_budget is None or b * heads * n * m <= _score_budget:
        return F.scaled_dot_product_attention(query, key, value)
    rows = max(1, _score_budget // (heads * n * m))
    queries = max(1, _score_budget // (heads * m))
    out = torch.empty_like(query)
    for r in range(0, b, rows):
        for q in range(0, n, queries):
            out[r:r + rows, :, q:q + queries] = F.scaled_dot_product_attention(
                query[r:r + rows, :, q:q + queries], key[r:r + rows], value[r:r + rows])
    return out


def attend(
    attn: Attention,
    hidden_states: torch.Tensor,
    context: torch.Tensor | None = None,
    extra_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
    key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention of `hidden_states` [B, N, C] over `context` (itself when None).

    `key_value` holds the context's keys and values [B, M, inner] already projected (see
    `ProjectionCache`); `extra_key_value` holds projected keys and values appended after them.
    """
    query = attn.to_q(hidden_states)
    if key_value is None:
        context = hidden_states if context is None else context
        key_value = attn.to_k(context), attn.to_v(context)
    key, value = key_value
    if extra_key_value is not None:
        key = torch.cat([key, extra_key_value[0]], dim=1)
        value = torch.cat([value, extra_key_value[1]], dim=1)
    heads = attn.heads
    out = _sdpa(_split_heads(query, heads), _split_heads(key, heads), _split_heads(value, heads))
    b, _, n, d = out.shape
    out = out.transpose(1, 2).reshape(b, n, heads * d)
    return attn.to_out[1](attn.to_out[0](out))


class ProjectionCache(dict):
    """Key/value projections of context tokens that are fixed for a clip, per attention module.

    One cache belongs to one set of conditions (one clip, one group of batch rows), so a module
    (and `part`, where it reads several slices of the rows) always meets the same tokens in it.
    While gradients are on (training) nothing is cached: gradient checkpointing recomputes
    blocks and must see the same operations again. Nor while torch.compile traces: a graph that
    fills the cache would be compiled a second time for the filled one (the whole Backbone again,
    minutes on a CPU); the compiled graph recomputes these few-token projections instead.
    """

    def key_value(self, attn: Attention, tokens: torch.Tensor, part: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return attn.to_k(tokens), attn.to_v(tokens)
        slot = (id(attn), part)
        if slot not in self:
            self[slot] = (attn.to_k(tokens), attn.to_v(tokens))
        return self[slot]


def row_runs(flags: tuple[bool, ...]) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal per-row flags as (start, end, flag): the batch rows that take one path
    (with or without reference or audio) run as slices, without gathering."""
    runs, start = [], 0
    for i in range(1, len(flags) + 1):
        if i == len(flags) or flags[i] != flags[start]:
            runs.append((start, i, flags[start]))
            start = i
    return runs


def make_attention(dim: int, heads: int, context_dim: int | None = None) -> Attention:
    """SD1.5-style attention: no q/k/v bias, biased output projection."""
    return Attention(query_dim=dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, bias=False)
