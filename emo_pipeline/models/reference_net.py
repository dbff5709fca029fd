"""ReferenceNet: the SD1.5-shaped 2-D UNet that reads the portrait (and the motion frames).

It runs once per clip at timestep 0. What the Backbone needs from it is the LayerNorm'd input of
each spatial self-attention (one feature per transformer block); its output layers
(`conv_norm_out`, `conv_out`) do not exist in Hallo's checkpoint. EchoMimic's reference_unet.pth
has them (a whole SD UNet); they are held so that its file loads strictly, and never run.
"""

from __future__ import annotations

import torch

from torch import nn

from ..config import EMOConfig
from .unet import UNetSkeleton
from .unet_blocks import UNetContext


class ReferenceNet(UNetSkeleton):
    def __init__(self, config: EMOConfig) -> None:
        super().__init__(config, video=False)
        if config.spec.reference_output_layers:
            channels = config.block_out_channels[0]
            self.conv_norm_out = nn.GroupNorm(config.norm_num_groups, channels, eps=config.norm_eps)
            self.conv_out = nn.Conv2d(channels, config.latent_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None) -> list[torch.Tensor]:
        """latents [N, 4, h, w], context [N, T, C] (None: attn2 is skipped, as EchoMimic's reference pass
        does) → per-block features [N, h_k, w_k, C_k] (block order)."""
        timestep = torch.zeros(1, device=latents.device)
        ctx = UNetContext(temb=self.time_embed(timestep, latents.shape[0]), context=context, features=[])
        self.run_blocks(self.conv_in(latents), ctx)
        return ctx.features
