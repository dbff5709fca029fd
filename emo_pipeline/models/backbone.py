"""Backbone: the SD1.5 UNet made 3-D, EMO's denoising network.

Each spatial block attends to the ReferenceNet's features (reference attention) and to the
identity tokens, then to the frame's audio tokens (audio attention); temporal modules run over
the frame axis with the motion frames' features joined in front. The face locator's features are
added after `conv_in`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config import EMOConfig
from .audio_attention import RegionMasks
from .spatial_transformer import ReferenceKV
from .unet import UNetSkeleton
from .unet_blocks import UNetContext


@dataclass
class BackboneConditions:
    """Per-clip conditioning of the Backbone; rows are batch items (B), frames are F.

    identity [B, T, C]; audio [B, F, Ta, Ca]; face_features [B, C0, h, w] or None;
    reference / motion: per transformer slot (see `Backbone.prepare_reference`);
    masks: per resolution level; speed [B, F, Cs] or None.
    """

    identity: torch.Tensor
    audio: torch.Tensor
    face_features: torch.Tensor | None = None
    reference: list[ReferenceKV | None] | None = None
    motion: list[torch.Tensor | None] | None = None
    masks: list[RegionMasks] | None = None
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    speed: torch.Tensor | None = None


class Backbone(UNetSkeleton):
    def __init__(self, config: EMOConfig) -> None:
        super().__init__(config, video=True)
        self.run_lowres_temporal = config.run_lowres_temporal
        channels = config.block_out_channels[0]
        self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels, eps=config.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(channels, config.latent_channels, 3, padding=1)

    def prepare_reference(
        self, features: list[torch.Tensor], batch: int, num_frames: int, use_reference: torch.Tensor,
        tile_items: bool = False,
    ) -> tuple[list[ReferenceKV | None], list[torch.Tensor | None]]:
        """Split ReferenceNet features into reference keys/values and motion-frame features.

        features[k] is [B*(1+n), h_k, w_k, C_k]: per batch item, the portrait then n motion frames.
        `use_reference` (bool [B]) marks the items whose self-attention sees the portrait.
        Keys and values are projected once here and reused for every frame and step.

        `tile_items` reproduces Hallo: it tiles the items' portrait features over the frames
        ([item 0, item 1, item 0, ...] for the B*F rows) instead of repeating each item's own, so
        under guidance the conditional frames alternate between the two ReferenceNet passes.
        """
        rows = use_reference.repeat_interleave(num_frames)
        if tile_items:
            source = torch.arange(batch * num_frames, device=rows.device) % batch
        else:
            source = torch.arange(batch, device=rows.device).repeat_interleave(num_frames)
        source = source[rows]
        reference, motion = [], []
        for attn, feature in zip(self.spatial_transformers(), features):
            per_item = feature.view(batch, -1, *feature.shape[1:])  # B, 1+n, h, w, C
            n = per_item.shape[1] - 1
            if rows.any():
                attn1 = attn.block.attn1
                tokens = per_item[:, 0].flatten(1, 2)
                key, value = attn1.to_k(tokens)[source], attn1.to_v(tokens)[source]
                reference.append(ReferenceKV(key, value, None if bool(rows.all()) else rows))
            else:
                reference.append(None)
            motion.append(per_item[:, 1:].flatten(0, 1).permute(0, 3, 1, 2) if n > 0 else None)
        return reference, motion

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, cond: BackboneConditions
    ) -> torch.Tensor:
        """sample [B, 4, F, h, w] → prediction [B, 4, F, h, w]."""
        b, c, f, height, width = sample.shape
        x = sample.transpose(1, 2).reshape(b * f, c, height, width)
        temb = self.time_embed(timestep, b).repeat_interleave(f, dim=0)
        h = self.conv_in(x)
        if cond.face_features is not None:
            h = h + cond.face_features.to(h.dtype).repeat_interleave(f, dim=0)
        ctx = UNetContext(
            temb=temb,
            context=cond.identity.repeat_interleave(f, dim=0),
            num_frames=f,
            audio=cond.audio.reshape(b * f, *cond.audio.shape[2:]),
            masks=cond.masks,
            region_weights=cond.region_weights,
            reference=cond.reference,
            motion=cond.motion,
            speed=cond.speed,
            run_lowres_temporal=self.run_lowres_temporal,
        )
        h = self.run_blocks(h, ctx)
        h = self.conv_out(self.conv_act(self.conv_norm_out(h)))
        return h.view(b, f, -1, height, width).transpose(1, 2)
