"""Backbone: the SD1.5 UNet made 3-D, EMO's denoising network.

Each spatial block attends to the ReferenceNet's features (reference attention) and to the
identity tokens, then to the frame's audio tokens (audio attention); temporal modules run over
the frame axis with the motion frames' features joined in front. The face locator's features are
added after `conv_in`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from einops import rearrange
from torch import nn

from ..config import EMOConfig
from .attention import ProjectionCache
from .audio_attention import FrameAudio, RegionMasks
from .deep_cache import DeepFeatureCache
from .memory_attention import TemporalMemory, add_past_frames
from .spatial_transformer import ReferenceKV
from .unet import UNetSkeleton
from .unet_blocks import UNetContext, group_norm_over_frames


@dataclass
class BackboneConditions:
    """Per-clip conditioning of the Backbone; rows are batch items (B), frames are F.

    identity [B, T, C] (None in EchoMimic's family); audio [B, F, Ta, Ca]; face_features [B, C0, h, w] (one
    map for every frame), [B, C0, F, h, w] (per frame: EchoMimic v2's pose features) or None;
    reference / motion: per transformer slot (see `Backbone.prepare_reference`);
    masks: per resolution level; speed [B, F, Cs] or None.
    `audio_heard[i]` False: item i gets no audio (guidance's unconditional item; its audio
    attention is the constant that zero tokens give). `items`: the items' indices in the clip's
    whole batch, so a subset (`select`) can share per-item state such as the deep-feature cache.
    `cache` keeps key/value projections of the fixed tokens across the clip's steps.
    MEMO: `emotion` [B] labels; `memory` each temporal module's memories of the past frames
    (`Backbone.prepare_memory`), in place of `motion`.
    """

    identity: torch.Tensor | None
    audio: torch.Tensor
    face_features: torch.Tensor | None = None
    reference: list[ReferenceKV | None] | None = None
    motion: list[torch.Tensor | None] | None = None
    masks: list[RegionMasks] | None = None
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    speed: torch.Tensor | None = None
    audio_heard: tuple[bool, ...] | None = None
    emotion: torch.Tensor | None = None
    memory: list[list[TemporalMemory]] | None = None
    items: tuple[int, ...] | None = None
    cache: ProjectionCache = field(default_factory=ProjectionCache, repr=False)

    @property
    def batch(self) -> int:
        return self.audio.shape[0]

    def item_ids(self) -> tuple[int, ...]:
        return self.items if self.items is not None else tuple(range(self.batch))

    def select(self, items: list[int]) -> "BackboneConditions":
        """The conditions of some batch items (positions in this batch), as if they ran alone."""
        f = self.audio.shape[1]
        rows = [i * f + j for i in items for j in range(f)]
        index = torch.tensor(items, device=self.audio.device)
        pick = lambda x: None if x is None else x.index_select(0, index)  # noqa: E731

        def pick_motion(m: torch.Tensor | None) -> torch.Tensor | None:
            if m is None:
                return None
            return m.view(self.batch, -1, *m.shape[1:]).index_select(0, index).flatten(0, 1)

        def pick_rows(mask: torch.Tensor) -> torch.Tensor:
            return mask if mask.ndim == 1 else mask[rows]

        return BackboneConditions(
            identity=pick(self.identity),
            audio=pick(self.audio),
            face_features=pick(self.face_features),
            reference=None if self.reference is None else [r.select(rows) if r is not None else None
                                                           for r in self.reference],
            motion=None if self.motion is None else [pick_motion(m) for m in self.motion],
            masks=None if self.masks is None else [RegionMasks(pick_rows(m.full), pick_rows(m.face), pick_rows(m.lip))
                                                   for m in self.masks],
            region_weights=self.region_weights,
            speed=pick(self.speed),
            audio_heard=None if self.audio_heard is None else tuple(self.audio_heard[i] for i in items),
            emotion=pick(self.emotion),
            memory=None if self.memory is None else [[m.select(items, self.batch) for m in ms] for ms in self.memory],
            items=tuple(self.item_ids()[i] for i in items),
        )


class Backbone(UNetSkeleton):
    def __init__(self, config: EMOConfig) -> None:
        super().__init__(config, video=True)
        self.run_lowres_temporal = config.run_lowres_temporal
        self.audio_in_cross_attention = config.spec.audio_route == "cross_attention"
        self.joint_audio = config.spec.audio_route == "joint_audio"
        self.joint_frame_norm = config.resnet_joint_frames
        channels = config.block_out_channels[0]
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels, eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels, config.latent_channels, 3, padding=1)

    def prepare_reference(
        self, features: list[torch.Tensor], batch: int, num_frames: int, use_reference: Sequence[bool],
        tile_items: bool = False, motion: bool = True,
    ) -> tuple[list[ReferenceKV | None], list[torch.Tensor | None]]:
        """Split ReferenceNet features into reference keys/values and motion-frame features.

        features[k] is [B*(1+n), h_k, w_k, C_k]: per batch item, the portrait then n motion frames.
        `use_reference` (one bool per item) marks the items whose self-attention sees the portrait.
        Keys and values are projected once here, one per item, and reused for every frame and step.

        `motion` False leaves the motion-frame features out (MEMO reads them through its memory).
        `tile_items` reproduces Hallo: it tiles the items' portrait features over the frames
        ([item 0, item 1, item 0, ...] for the B*F rows) instead of repeating each item's own, so
        under guidance the conditional frames alternate between the two ReferenceNet passes.
        """
        use = [bool(u) for u in use_reference]
        rows = range(batch * num_frames)
        sources = tuple((r % batch if tile_items else r // num_frames) if use[r // num_frames] else None for r in rows)
        reference, motion_features = [], []
        for attn, feature in zip(self.spatial_transformers(), features):
            per_item = feature.view(batch, -1, *feature.shape[1:])  # B, 1+n, h, w, C
            n = per_item.shape[1] - 1
            if any(use):
                reader = attn.block.reference_attention  # attn1, or V-Express's attn1_5
                tokens = per_item[:, 0].flatten(1, 2)
                reference.append(ReferenceKV(reader.to_k(tokens), reader.to_v(tokens), sources))
            else:
                reference.append(None)
            # contiguous once per clip: the temporal modules read these at every step
            motion_features.append(per_item[:, 1:].flatten(0, 1).permute(0, 3, 1, 2).contiguous()
                                   if n > 0 and motion else None)
        return reference, motion_features

    def temporal_modules(self) -> list[nn.Module]:
        """Every temporal module, in the order they run (their `memory_slot`)."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [module for block in blocks for module in block.motion_modules]

    def prepare_memory(self, features: list[torch.Tensor], plain: list[torch.Tensor], batch: int,
                       previous: list[list[TemporalMemory]] | None) -> list[list[TemporalMemory]]:
        """MEMO: each temporal module's memories once this clip's past frames are added to `previous` (None:
        a fresh start). features/plain: the ReferenceNet's (with_plain), per batch item the portrait then the
        past frames; a layer reads its reference feature, an attention-free layer its resnet output."""
        memories = []
        for module in self.temporal_modules():
            kind, slot = module.past_source
            x = features[slot].permute(0, 3, 1, 2) if kind == "reference" else plain[slot]  # N, C, h, w
            per_item = x.reshape(batch, -1, *x.shape[1:])
            past = per_item[:, 1:].flatten(0, 1)
            memories.append(add_past_frames(module, past, per_item.shape[1] - 1,
                                            previous[module.memory_slot] if previous is not None else None))
        return memories

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, cond: BackboneConditions,
        deep_cache: DeepFeatureCache | None = None,
    ) -> torch.Tensor:
        """sample [B, 4, F, h, w] → prediction [B, 4, F, h, w].

        With a `deep_cache` that is reusing and holds these items, the lower resolutions are not
        run: their output is taken from the cache's last full step (DeepCache). Otherwise a cache
        records this step's for later ones.
        """
        b, c, f, height, width = sample.shape
        x = sample.transpose(1, 2).reshape(b * f, c, height, width)
        if timestep.numel() == 1:
            temb = self.time_embed(timestep, 1)  # one row, broadcast by the resnets over all frames
        else:
            temb = self.time_embed(timestep, b).repeat_interleave(f, dim=0)
        h = self.conv_in(x)
        if cond.face_features is not None and cond.face_features.ndim == 5:  # per frame (EchoMimic v2's poses)
            h = h + rearrange(cond.face_features.to(h.dtype), "b c f h w -> (b f) c h w")
        elif cond.face_features is not None:  # one map for every frame
            h = h + cond.face_features.to(h.dtype).repeat_interleave(f, dim=0)
        heard = None if cond.audio_heard is None else tuple(a for a in cond.audio_heard for _ in range(f))
        frame_audio = cond.audio.reshape(b * f, *cond.audio.shape[2:])
        joint_audio = None
        if self.audio_in_cross_attention:  # EchoMimic: attn2 reads each frame's audio tokens
            context, audio = frame_audio.to(h.dtype), None
        elif self.joint_audio:  # MEMO: the tokens go through every audio module, updated by each
            context, audio = cond.identity.repeat_interleave(f, dim=0), None
            joint_audio = frame_audio.to(h.dtype)
        else:
            context, audio = cond.identity.repeat_interleave(f, dim=0), FrameAudio(frame_audio, heard, cond.cache)
        ctx = UNetContext(
            temb=temb,
            context=context,
            num_frames=f,
            audio=audio,
            masks=cond.masks,
            region_weights=cond.region_weights,
            reference=cond.reference,
            motion=cond.motion,
            speed=cond.speed,
            run_lowres_temporal=self.run_lowres_temporal,
            cache=cond.cache,
            joint_audio=joint_audio,
            emotion=cond.emotion,
            memory=cond.memory,
        )
        items = cond.item_ids()
        deep = deep_cache.get(items) if deep_cache is not None and deep_cache.reusing else None
        if deep is not None and self.joint_audio:
            ctx.deep_audio = deep_cache.get_audio(items)
        h = self.run_blocks(h, ctx, deep=deep, keep_deep=deep_cache is not None and deep is None)
        if deep_cache is not None and deep is None:
            deep_cache.put(items, ctx.deep_features, ctx.deep_audio if self.joint_audio else None)
        # MEMO's output norm spans the frames too, as its resnets' do (use_inflated_groupnorm false)
        norm = group_norm_over_frames(self.conv_norm_out, h, f) if self.joint_frame_norm else self.conv_norm_out(h)
        h = self.conv_out(self.conv_act(norm))
        return h.view(b, f, -1, height, width).transpose(1, 2)
