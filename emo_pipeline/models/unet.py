"""The SD1.5-shaped UNet skeleton that the ReferenceNet and the Backbone both inherit."""

from __future__ import annotations

import torch
import torch.utils.checkpoint
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from ..config import EMOConfig
from .unet_blocks import BlockOptions, DownBlock, LayerSpec, MidBlock, UNetContext, UpBlock


class UNetSkeleton(nn.Module):
    def __init__(self, config: EMOConfig, video: bool) -> None:
        """`video` adds the Backbone's audio-attention and temporal modules."""
        super().__init__()
        channels = config.block_out_channels
        levels = len(channels)
        temb_channels = channels[0] * 4
        spec = config.spec
        audio_in_attn2 = video and spec.audio_route == "cross_attention"
        audio_modules = video and spec.audio_route in ("audio_modules", "joint_audio")
        memo = spec.audio_route == "joint_audio"
        opts = BlockOptions(
            heads=config.attention_heads,
            context_dim=(config.audio_attention_dim if audio_in_attn2 else
                         config.cross_attention_dim if video or spec.reference_cross_attention else None),
            context_scale=spec.cross_attention_scale if audio_in_attn2 else 1.0,
            groups=config.norm_num_groups,
            eps=config.norm_eps,
            temb_channels=temb_channels,
            audio_dim=config.audio_attention_dim,
            audio_masked=config.audio_attention == "masked",
            audio_shared=spec.shared_audio_attention,
            audio_joint=memo,
            joint_frame_norm=video and config.resnet_joint_frames,
            temporal_heads=config.temporal_heads,
            temporal_max_len=config.temporal_max_len,
            speed_dim=config.speed_embed_dim if config.has_speed_layers else 0,
            separate_reference=spec.reference_route == "separate",
            reads_reference=video,
            reference_scale=spec.reference_scale,
        )

        self.conv_in = nn.Conv2d(config.latent_channels, channels[0], 3, padding=1)
        self.time_proj = Timesteps(channels[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(channels[0], temb_channels)

        self.down_blocks = nn.ModuleList()
        for i, out_ch in enumerate(channels):
            in_ch = channels[max(i - 1, 0)]
            attention = i < levels - 1  # SD1.5: the last (lowest-resolution) block has no attention
            specs = [
                LayerSpec(
                    attention=attention,
                    # Hallo sizes the audio attention by the resnet's *input* width.
                    audio_inner=(in_ch if j == 0 else out_ch) if audio_modules and attention else None,
                    temporal=video and i in config.temporal_levels,
                )
                for j in range(config.layers_per_block)
            ]
            self.down_blocks.append(DownBlock(in_ch, out_ch, specs, depth=i, add_downsample=i < levels - 1, opts=opts))

        reversed_channels = list(reversed(channels))
        self.up_blocks = nn.ModuleList()
        prev_ch = reversed_channels[0]
        for i, out_ch in enumerate(reversed_channels):
            in_ch = reversed_channels[min(i + 1, levels - 1)]
            depth = levels - 1 - i
            attention = i > 0
            last_block = i == levels - 1
            n = config.layers_per_block + 1
            specs = [
                LayerSpec(
                    attention=attention,
                    audio_inner=in_ch if audio_modules and attention else None,
                    temporal=video and depth in config.temporal_levels,
                    # MEMO: the very last audio module hands no audio on; its ReferenceNet's very last
                    # transformer is built only up to its reference feature
                    audio_last=memo and last_block and j == n - 1,
                    feature_only=memo and not video and last_block and j == n - 1,
                )
                for j in range(n)
            ]
            self.up_blocks.append(
                UpBlock(in_ch, prev_ch, out_ch, specs, depth=depth, add_upsample=i < levels - 1, opts=opts)
            )
            prev_ch = out_ch

        mid_spec = LayerSpec(
            attention=True,
            audio_inner=channels[-1] if audio_modules else None,
            temporal=video and config.temporal_mid_block,
        )
        self.mid_block = MidBlock(channels[-1], mid_spec, opts)

        # Number the spatial transformers in the order both UNets run them; the Backbone's
        # block k reads the ReferenceNet's block k. The attention-free layers are numbered apart
        # (MEMO's temporal memory reads their resnet outputs), and so are the temporal modules.
        for slot, attn in enumerate(self.spatial_transformers()):
            attn.slot = slot
        plain = memory = 0
        for block in [*self.down_blocks, self.mid_block, *self.up_blocks]:
            if not len(block.attentions):
                block.plain_slots = list(range(plain, plain + len(block.resnets)))
                plain += len(block.resnets)
            for i, module in enumerate(block.motion_modules):
                module.memory_slot = memory
                # where its past frames come from: the layer's reference feature, or its resnet output
                module.past_source = ("reference", block.attentions[i].slot) if len(block.attentions) \
                    else ("plain", block.plain_slots[i])
                memory += 1

    def spatial_transformers(self) -> list[nn.Module]:
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        return [attn for block in blocks for attn in block.attentions]

    def time_embed(self, timestep: torch.Tensor, batch: int) -> torch.Tensor:
        t = timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep
        emb = self.time_proj(t).to(self.time_embedding.linear_1.bias.dtype)  # the weight may be fp8
        return self.time_embedding(emb)

    gradient_checkpointing = False  # training: recompute each block in backward instead of storing it

    def _call(self, block, *args):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def run_blocks(self, h: torch.Tensor, ctx: UNetContext, deep: torch.Tensor | None = None,
                   keep_deep: bool = False) -> torch.Tensor:
        """Down, mid and up blocks. `deep`: the top up-block's input from an earlier step
        (DeepCache), so only the top level runs; `keep_deep` leaves this step's in ctx.deep_features."""
        skips = [h]
        if deep is not None:
            h, block_skips = self._call(self.down_blocks[0], h, ctx, False)
            skips.extend(block_skips)
            h, up_blocks = deep, self.up_blocks[-1:]
        else:
            for block in self.down_blocks:
                h, block_skips = self._call(block, h, ctx)
                skips.extend(block_skips)
            h, up_blocks = self._call(self.mid_block, h, ctx), self.up_blocks
        if deep is not None and ctx.deep_audio is not None:
            ctx.joint_audio = ctx.deep_audio  # the tokens as the skipped blocks left them
        for block in up_blocks:
            if keep_deep and block is self.up_blocks[-1]:
                ctx.deep_features, ctx.deep_audio = h, ctx.joint_audio
            n = len(block.resnets)
            block_skips, skips = skips[-n:], skips[:-n]
            upsample_size = tuple(skips[-1].shape[-2:]) if block.upsamplers is not None else None
            h = self._call(block, h, block_skips, ctx, upsample_size)
        return h
