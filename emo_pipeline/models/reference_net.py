"""ReferenceNet: the SD1.5-shaped 2-D UNet that reads the portrait (and the motion frames).

It runs once per clip at timestep 0. What the Backbone needs from it is the LayerNorm'd input of
each spatial self-attention (one feature per transformer block); its output layers
(`conv_norm_out`, `conv_out`) do not exist, as in Hallo's and EchoMimic's checkpoints. EchoMimic's
ReferenceNet has no cross-attention either (no attn2, no norm2). MEMO's temporal memory also reads the
resnet outputs of the attention-free (8×8) layers (`with_plain`).
"""

from __future__ import annotations

import torch

from ..config import EMOConfig
from .unet import UNetSkeleton
from .unet_blocks import UNetContext


class ReferenceNet(UNetSkeleton):
    def __init__(self, config: EMOConfig) -> None:
        super().__init__(config, video=False)

    def forward(self, latents: torch.Tensor, context: torch.Tensor | None, with_plain: bool = False
                ) -> list[torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
        """latents [N, 4, h, w], context [N, T, C] (None for a ReferenceNet without cross-attention)
        → per-block features [N, h_k, w_k, C_k] (block order); `with_plain`: and the attention-free layers'
        resnet outputs [N, C_k, h_k, w_k] (layer order)."""
        timestep = torch.zeros(1, device=latents.device)
        ctx = UNetContext(temb=self.time_embed(timestep, latents.shape[0]), context=context, features=[],
                          plain_features=[] if with_plain else None)
        self.run_blocks(self.conv_in(latents), ctx)
        return (ctx.features, ctx.plain_features) if with_plain else ctx.features
