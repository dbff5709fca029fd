"""The spatial transformer of both UNets, with EMO's reference attention.

In the ReferenceNet it is an ordinary SD1.5 transformer whose LayerNorm'd self-attention input
(`norm1` output) is handed out as the reference feature of that block. In the Backbone the same
block appends those reference tokens to its self-attention keys and values (Hallo's form of
EMO's reference-attention), and attn2 reads the identity tokens (EMO/Hallo) or the frame's audio
tokens (EchoMimic, whose output is scaled by 3; its ReferenceNet skips attn2 altogether).
MEMO's ReferenceNet builds its very last transformer only up to that feature (`feature_only`:
norm, proj_in and norm1; nothing reads what would come after it).

V-Express's "separate" route (docs/v-express-inference.md §1.2-1.3): the ReferenceNet hands out its `norm2`
output instead (after the self-attention's residual), and the Backbone's block reads it in a cross-attention of
its own placed after the self-attention, `attn1_5` with `norm1_5`, whose keys and values are the portrait's
tokens alone, its output scaled by 0.95. A row without the portrait (guidance's unconditional row: V-Express's
zero reference) gets what zero keys and values give, the output projection's bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.attention import FeedForward
from torch import nn

from .attention import ProjectionCache, attend, make_attention, row_runs


@dataclass
class ReferenceKV:
    """Projected portrait keys/values of one transformer slot, and which frame rows read them.

    key/value [S, M, inner] hold one entry per source (a batch item's ReferenceNet pass);
    `sources[r]` is the source frame row r attends to, or None for plain self-attention
    (Hallo's unconditional rows). Keeping the sources apart instead of one copy per frame row
    saves memory, and lets a subset of the rows run on its own (`select`).
    """

    key: torch.Tensor
    value: torch.Tensor
    sources: tuple[int | None, ...]

    def select(self, rows: list[int]) -> "ReferenceKV | None":
        sources = tuple(self.sources[r] for r in rows)
        return None if all(s is None for s in sources) else ReferenceKV(self.key, self.value, sources)


class ReferenceTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None, context_scale: float = 1.0,
                 feature_only: bool = False, separate_reference: bool = False, reads_reference: bool = False,
                 reference_scale: float = 1.0) -> None:
        """`separate_reference`: V-Express's route (the module's note); `reads_reference`: the Backbone's block,
        which then has attn1_5 and norm1_5."""
        super().__init__()
        self.context_scale = context_scale
        self.separate_reference, self.reference_scale = separate_reference, reference_scale
        self.norm1 = nn.LayerNorm(dim)
        self.feature_only = feature_only
        if feature_only:
            return
        self.attn1 = make_attention(dim, heads)
        self.norm1_5 = self.attn1_5 = None
        if separate_reference and reads_reference:
            self.norm1_5 = nn.LayerNorm(dim)
            self.attn1_5 = make_attention(dim, heads)
        if context_dim is not None:  # EchoMimic's ReferenceNet has no cross-attention
            self.norm2 = nn.LayerNorm(dim)
            self.attn2 = make_attention(dim, heads, context_dim)
        else:
            self.norm2 = self.attn2 = None
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def _self_attention(self, h: torch.Tensor, reference: ReferenceKV | None) -> torch.Tensor:
        if reference is None:
            return attend(self.attn1, h)
        parts = []
        for start, end, reads in row_runs(tuple(s is not None for s in reference.sources)):
            rows = h[start:end]
            if not reads:
                parts.append(attend(self.attn1, rows))
                continue
            sources = reference.sources[start:end]
            if len(set(sources)) == 1:  # one source for the run: a view, no copy
                index = sources[0]
                extra = (reference.key[index].expand(end - start, -1, -1),
                         reference.value[index].expand(end - start, -1, -1))
            else:
                index = torch.tensor(sources, device=h.device)
                extra = (reference.key.index_select(0, index), reference.value.index_select(0, index))
            parts.append(attend(self.attn1, rows, extra_key_value=extra))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @property
    def reference_attention(self):
        """The attention whose keys and values the portrait's tokens become."""
        return self.attn1_5 if self.separate_reference else self.attn1

    def _reference_attention(self, h: torch.Tensor, reference: ReferenceKV | None) -> torch.Tensor:
        """attn1_5 over the portrait's tokens alone; rows without a source get its output bias (zero keys and
        values: uniform weights over zero values)."""
        attn = self.attn1_5
        no_source = attn.to_out[0].bias.to(h.dtype).expand_as(h)
        if reference is None:
            return no_source
        parts = []
        for start, end, reads in row_runs(tuple(s is not None for s in reference.sources)):
            if not reads:
                parts.append(no_source[start:end])
                continue
            sources = reference.sources[start:end]
            if len(set(sources)) == 1:
                kv = (reference.key[sources[0]].expand(end - start, -1, -1),
                      reference.value[sources[0]].expand(end - start, -1, -1))
            else:
                index = torch.tensor(sources, device=h.device)
                kv = (reference.key.index_select(0, index), reference.value.index_select(0, index))
            parts.append(attend(attn, h[start:end], key_value=kv))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None, reference: ReferenceKV | None = None,
        cache: ProjectionCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.norm1(x)
        if self.feature_only:
            return x, h
        if not self.separate_reference:
            x = x + self._self_attention(h, reference)
            feature = h
        else:
            x = x + attend(self.attn1, h)
            if self.attn1_5 is not None:
                out = self._reference_attention(self.norm1_5(x), reference)
                x = x + (out * self.reference_scale if self.reference_scale != 1.0 else out)
            feature = self.norm2(x) if self.norm2 is not None else None
        if self.attn2 is not None and context is not None:
            key_value = cache.key_value(self.attn2, context) if cache is not None else None
            n2 = feature if self.separate_reference else self.norm2(x)
            out = attend(self.attn2, n2, context, key_value=key_value)
            x = x + (out * self.context_scale if self.context_scale != 1.0 else out)
        x = x + self.ff(self.norm3(x))
        return x, feature


class SpatialTransformer(nn.Module):
    """GroupNorm, 1x1 projection in, one transformer block, 1x1 projection out, residual."""

    def __init__(self, channels: int, heads: int, context_dim: int | None, groups: int,
                 context_scale: float = 1.0, feature_only: bool = False, separate_reference: bool = False,
                 reads_reference: bool = False, reference_scale: float = 1.0) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, 1)
        self.transformer_blocks = nn.ModuleList([
            ReferenceTransformerBlock(channels, heads, context_dim, context_scale, feature_only, separate_reference,
                                      reads_reference, reference_scale)])
        self.proj_out = None if feature_only else nn.Conv2d(channels, channels, 1)

    @property
    def block(self) -> ReferenceTransformerBlock:
        return self.transformer_blocks[0]

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None, reference: ReferenceKV | None = None,
        cache: ProjectionCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C, H, W], context [N, T, Cc] → (x, reference feature [N, H, W, C])."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, c)
        h, feature = self.block(h, context, reference, cache)
        if self.proj_out is None:
            return x, feature.view(n, height, width, c)
        # contiguous: a channels-last result here crashes GroupNorm's CPU backward in torch 2.13
        h = h.reshape(n, height, width, c).permute(0, 3, 1, 2).contiguous()
        return self.proj_out(h) + x, feature.view(n, height, width, c)
