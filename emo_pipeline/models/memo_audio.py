"""MEMO's emotion-aware audio module (one per spatial layer of its diffusion net, where Hallo has
its audio attention).

Each frame's latent tokens and its audio tokens are two streams: each stream attends to itself,
then both attend jointly over their concatenation (as SD3's joint attention), and each has its own
feed-forward. The layer norms before the attentions are modulated by the emotion label (a learned
shift and scale per label; row 9 is "no emotion"). The audio tokens leave the module updated and
go on to the next one. Key names are MEMO's (`Transformer3DModel(use_audio_module=True)`).
"""

from __future__ import annotations

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from .attention import _sdpa, _split_heads, attend

EMOTION_CLASSES = 9  # MEMO's classifier's labels; the embedding table has one more row for "none"


class _LabelTable(nn.Module):
    def __init__(self, rows: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(rows, dim)


class EmotionLayerNorm(nn.Module):
    """LayerNorm without affine, then x · (1 + scale) + shift from the emotion label's embedding."""

    def __init__(self, dim: int, classes: int = EMOTION_CLASSES) -> None:
        super().__init__()
        self.class_embedder = _LabelTable(classes + 1, dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-5)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        """x [R·k, N, dim]; emotion [R] labels, one per guidance row (each row's k frames share it)."""
        shift, scale = self.adaLN_modulation(self.class_embedder.embedding_table(emotion)).chunk(2, dim=1)
        repeat = x.shape[0] // emotion.shape[0]
        shift = shift.repeat_interleave(repeat, dim=0)[:, None]
        scale = scale.repeat_interleave(repeat, dim=0)[:, None]
        return self.norm(x) * (1 + scale) + shift


class JointAudioBlock(nn.Module):
    def __init__(self, dim: int, heads: int, audio_dim: int, last: bool = False) -> None:
        super().__init__()
        head_dim = dim // heads
        self.last = last
        self.norm1 = EmotionLayerNorm(dim)
        self.attn1 = Attention(query_dim=dim, heads=heads, dim_head=head_dim, bias=False)
        self.audio_norm1 = EmotionLayerNorm(audio_dim)
        self.audio_attn1 = Attention(query_dim=audio_dim, heads=heads, dim_head=head_dim, bias=False)
        self.norm2 = EmotionLayerNorm(dim)
        self.audio_norm2 = EmotionLayerNorm(audio_dim)
        self.attn2 = Attention(query_dim=dim, cross_attention_dim=dim, added_kv_proj_dim=audio_dim, heads=heads,
                               dim_head=head_dim, bias=False, out_dim=dim, out_context_dim=audio_dim,
                               context_pre_only=False)
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.norm3 = nn.LayerNorm(dim)
        if last:  # the last module's audio stream goes nowhere: MEMO builds no audio output for it
            del self.attn2.to_add_out
        else:
            self.audio_ff = FeedForward(audio_dim, activation_fn="geglu")
            self.audio_norm3 = nn.LayerNorm(audio_dim)

    def _joint(self, h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn = self.attn2
        query = torch.cat([attn.to_q(h), attn.add_q_proj(a)], dim=1)
        key = torch.cat([attn.to_k(h), attn.add_k_proj(a)], dim=1)
        value = torch.cat([attn.to_v(h), attn.add_v_proj(a)], dim=1)
        heads = attn.heads
        out = _sdpa(_split_heads(query, heads), _split_heads(key, heads), _split_heads(value, heads))
        b, _, n, d = out.shape
        out = out.transpose(1, 2).reshape(b, n, heads * d)
        visual, audio = out[:, : h.shape[1]], out[:, h.shape[1]:]
        return attn.to_out[0](visual), None if self.last else attn.to_add_out(audio)

    def forward(self, h: torch.Tensor, a: torch.Tensor, emotion: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        n, na = self.norm1(h, emotion), self.audio_norm1(a, emotion)
        h = attend(self.attn1, n) + h
        a = attend(self.audio_attn1, na) + a
        visual, audio = self._joint(self.norm2(h, emotion), self.audio_norm2(a, emotion))
        h = visual + h
        h = self.ff(self.norm3(h)) + h
        if self.last:
            return h, None
        a = audio + a
        return h, self.audio_ff(self.audio_norm3(a)) + a


class MemoAudioModule(nn.Module):
    """GroupNorm → 1×1 conv to `inner` channels → one joint block → 1×1 conv back, plus the input;
    the audio tokens come out with the module's input audio added once more."""

    def __init__(self, channels: int, inner: int, heads: int = 8, audio_dim: int = 768, groups: int = 32,
                 last: bool = False) -> None:
        super().__init__()
        self.last = last
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList([JointAudioBlock(inner, heads, audio_dim, last)])
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, audio: torch.Tensor, emotion: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B·F, C, H, W] (each guidance row's frames together); audio [B·F, tokens, audio_dim]; emotion [B]
        labels. Returns the frames and the audio tokens for the next module (None from the last one)."""
        n, c, height, width = x.shape
        h = self.proj_in(self.norm(x))
        inner = h.shape[1]
        h = h.permute(0, 2, 3, 1).reshape(n, height * width, inner)
        h, a_out = self.transformer_blocks[0](h, audio, emotion)
        h = h.reshape(n, height, width, inner).permute(0, 3, 1, 2).contiguous()  # see SpatialTransformer
        return self.proj_out(h) + x, None if self.last else a_out + audio
