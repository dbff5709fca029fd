"""MEMO's memory-guided temporal attention: linear attention over the clip's frames plus a decayed
memory of every frame before them.

Queries are normalised with a softmax over each head's channels, keys with a softmax over the
frames. The memory holds Σ kᵀv and Σ k of past frames: when a clip's past frames arrive (16 of
them, oldest first), the old memory fades by 0.9 per frame (0.9¹⁶) and the new frames enter with
weights 0.9^(15−j) on both k and v (on k alone for Σ k), as MEMO's code computes them. The clip's
own frames join undecayed and the whole memory counts at 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import _split_heads

DECAY = 0.9


@dataclass
class TemporalMemory:
    """One attention block's memory for a batch: KV [B·HW·heads, d, d], Z [B·HW·heads, 1, d], item-major."""

    kv: torch.Tensor | None = None
    z: torch.Tensor | None = None

    def select(self, items: list[int], batch: int) -> "TemporalMemory":
        """The memory of some of the `batch` items (a view when they are consecutive)."""
        def pick(x: torch.Tensor) -> torch.Tensor:
            per_item = x.view(batch, -1, *x.shape[1:])
            if items == list(range(items[0], items[-1] + 1)):
                return per_item[items[0]: items[-1] + 1].flatten(0, 1)
            return per_item[items].flatten(0, 1)
        return TemporalMemory(pick(self.kv), pick(self.z))

    def add(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """key (softmaxed over frames) and value [B·heads, frames, d] of past frames, oldest first."""
        frames = key.shape[1]
        weights = DECAY ** torch.arange(frames - 1, -1, -1, device=key.device, dtype=key.dtype)
        key, value = key * weights[:, None], value * weights[:, None]
        kv, z = torch.einsum("bij,bik->bjk", key, value), key.sum(dim=1, keepdim=True)
        if self.kv is None:
            self.kv, self.z = kv, z
        else:
            self.kv = self.kv * DECAY ** frames + kv
            self.z = self.z * DECAY ** frames + z


def _heads(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B, N, C] → [B·heads, N, C / heads]"""
    return _split_heads(x, attn.heads).flatten(0, 1)


def memory_attention(attn: nn.Module, x: torch.Tensor, past: torch.Tensor | None, memory: TemporalMemory
                     ) -> torch.Tensor:
    """x [B, frames, C] (the clip's frames, as a temporal sequence per pixel); past [B, past frames, C] to add
    to `memory` first (None: use the memory as it is). `attn` has to_q/to_k/to_v/to_out and `heads`.
    Returns [B, frames, C]."""
    if past is not None:
        with torch.no_grad():
            memory.add(torch.softmax(_heads(attn, attn.to_k(past)), dim=-2), _heads(attn, attn.to_v(past)))
    query = _heads(attn, attn.to_q(x))
    query = torch.softmax(query, dim=-1) * query.shape[-1] ** -0.5
    key = torch.softmax(_heads(attn, attn.to_k(x)), dim=-2)
    value = _heads(attn, attn.to_v(x))
    kv = DECAY * memory.kv + torch.einsum("bnd,bne->bde", key, value)
    z = DECAY * memory.z + key.sum(dim=-2, keepdim=True)
    out = torch.einsum("bnd,bde->bne", query, kv) / torch.einsum("bnd,bod->bno", query, z).clamp(min=1e-10)
    b = x.shape[0]
    out = out.view(b, attn.heads, x.shape[1], -1).permute(0, 2, 1, 3).reshape(b, x.shape[1], -1)
    return attn.to_out[1](attn.to_out[0](out))


def _sequences(t: nn.Module, y: torch.Tensor, frames: int) -> torch.Tensor:
    """[B·f, C, H, W] → [B·HW, f, C] through the temporal transformer's norm and input projection."""
    bf, c, height, width = y.shape
    b, hw = bf // frames, height * width
    return t.proj_in(t.norm(y).view(b, frames, c, hw).permute(0, 3, 1, 2).reshape(b * hw, frames, c))


def add_past_frames(module: nn.Module, past: torch.Tensor, past_frames: int,
                    previous: list[TemporalMemory] | None) -> list[TemporalMemory]:
    """The memories of a temporal module (`TemporalModule` layout, one per attention block) once a clip's past
    frames are added: past [B·P, C, H, W], the past frames' features, taken through the same norm, projection and
    each block's layer norm (never updated between the blocks, no position encoding). `previous`: the memories
    before them (left as they are), None to start afresh. They depend on the past frames alone, so a clip computes
    them once, before its steps."""
    t = module.temporal_transformer
    m = _sequences(t, past, past_frames)
    block = t.transformer_blocks[0]
    memories = []
    for k, (attention, norm) in enumerate(zip(block.attention_blocks, block.norms)):
        memory = TemporalMemory() if previous is None else TemporalMemory(previous[k].kv, previous[k].z)
        past_k = norm(m)
        memory.add(torch.softmax(_heads(attention, attention.to_k(past_k)), dim=-2),
                   _heads(attention, attention.to_v(past_k)))
        memories.append(memory)
    return memories


def memory_temporal_module(module: nn.Module, x: torch.Tensor, num_frames: int,
                           memories: list[TemporalMemory]) -> torch.Tensor:
    """MEMO's temporal module on our AnimateDiff layout (`TemporalModule`, the same keys): x [B·F, C, H, W];
    memories: one per attention block (see `add_past_frames`). Returns [B·F, C, H, W]."""
    t = module.temporal_transformer
    bf, c, height, width = x.shape
    b, hw = bf // num_frames, height * width
    h = _sequences(t, x, num_frames)
    block = t.transformer_blocks[0]
    for attention, norm, memory in zip(block.attention_blocks, block.norms, memories):
        h = h + memory_attention(attention, attention.pos_encoder(norm(h)), None, memory)
    h = h + block.ff(block.ff_norm(h))
    h = t.proj_out(h).view(b, hw, num_frames, c).permute(0, 2, 3, 1)
    return h.reshape(bf, c, height, width) + x
