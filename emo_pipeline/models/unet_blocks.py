"""Down, mid and up blocks shared by the ReferenceNet (2-D) and the Backbone (3-D).

Frames travel folded into the batch ([B*F, C, H, W]): every spatial layer works per frame
(Hallo's "inflated" convs and group norms are exactly that), and the temporal modules unfold
the frame axis themselves. Each layer is resnet → spatial transformer → audio attention →
temporal module; which of them exist is decided at construction, so the state-dict names
(`resnets.N`, `attentions.N`, `audio_modules.N`, `motion_modules.N`) match Hallo's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from .attention import ProjectionCache
from .audio_attention import AudioAttention, FrameAudio, RegionMasks
from .memo_audio import MemoAudioModule
from .memory_attention import TemporalMemory, memory_temporal_module
from .spatial_transformer import ReferenceKV, SpatialTransformer
from .temporal import TemporalModule


@dataclass
class LayerSpec:
    """What one resnet layer of a block carries besides its resnet."""

    attention: bool
    audio_inner: int | None = None  # inner width of the audio attention, None for none
    temporal: bool = False
    audio_last: bool = False  # MEMO: the last audio module, which hands no audio on
    feature_only: bool = False  # MEMO's ReferenceNet: the last transformer stops at its reference feature


@dataclass
class BlockOptions:
    heads: int
    context_dim: int | None  # None: the spatial transformers have no cross-attention
    groups: int
    eps: float
    temb_channels: int
    context_scale: float = 1.0  # EchoMimic scales its audio cross-attention's output by 3
    audio_dim: int = 0
    audio_masked: bool = True
    audio_shared: bool = False  # JoyHallo: the masked branches share one cross-attention
    audio_joint: bool = False  # MEMO's joint, emotion-aware audio modules
    joint_frame_norm: bool = False  # the resnets' GroupNorms span each item's frames (MEMO)
    temporal_heads: int = 8
    temporal_max_len: int = 32
    temporal_groups: int = 32  # AnimateDiff's temporal GroupNorm always has 32 groups
    speed_dim: int = 0
    separate_reference: bool = False  # V-Express: the portrait read by attn1_5 (spatial_transformer.py)
    reads_reference: bool = False  # the Backbone's blocks (they have attn1_5 on that route)
    reference_scale: float = 1.0


@dataclass
class UNetContext:
    """Everything a forward pass hands to the blocks.

    `reference` and `motion` are indexed by spatial-transformer slot (blocks numbered in
    down → mid → up order, the same in both UNets). `features` collects the ReferenceNet's
    per-slot reference features when it is not None. `cache` keeps the key/value projections of
    the clip's fixed tokens (identity, audio, speed) across denoising steps.
    """

    temb: torch.Tensor
    context: torch.Tensor | None  # attn2's tokens per row; None: attn2 does not run (EchoMimic's ReferenceNet)
    num_frames: int = 1
    audio: FrameAudio | None = None
    masks: list[RegionMasks] | None = None
    region_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    reference: list[ReferenceKV | None] | None = None
    motion: list[torch.Tensor | None] | None = None
    speed: torch.Tensor | None = None
    run_lowres_temporal: bool = False
    features: list[torch.Tensor] | None = None
    # the resnet outputs of attention-free layers, collected with `features` where MEMO's
    # temporal memory reads them (indexed by `plain_slots`)
    plain_features: list[torch.Tensor] | None = None
    cache: ProjectionCache | None = None
    deep_features: torch.Tensor | None = None  # the top up-block's input, kept for DeepCache
    # MEMO: the audio tokens as the last audio module left them [N, T, C] (each module updates them),
    # the emotion label of each batch item, and each temporal module's memory (by `memory_slot`)
    joint_audio: torch.Tensor | None = None
    emotion: torch.Tensor | None = None
    memory: list[list[TemporalMemory]] | None = None
    deep_audio: torch.Tensor | None = None  # joint_audio at the top up-block's input, for DeepCache


class UNetLayers(nn.Module):
    """The resnet/attention/audio/temporal stack shared by all three block kinds."""

    def _build_layers(self, in_channels: list[int], out_channels: int, specs: list[LayerSpec], depth: int,
                      opts: BlockOptions) -> None:
        self.depth = depth  # index of the latent resolution (0 = largest): selects the region masks
        self.resnets = nn.ModuleList(
            ResnetBlock2D(in_channels=c, out_channels=out_channels, temb_channels=opts.temb_channels,
                          groups=opts.groups, eps=opts.eps)
            for c in in_channels
        )
        self.joint_frame_norm = opts.joint_frame_norm
        self.plain_slots: list[int] = []  # numbered by UNetSkeleton when this block has no attention
        self.attentions = nn.ModuleList(
            SpatialTransformer(out_channels, opts.heads, opts.context_dim, opts.groups, opts.context_scale,
                               s.feature_only, opts.separate_reference, opts.reads_reference, opts.reference_scale)
            for s in specs if s.attention
        )
        self.audio_modules = nn.ModuleList(
            MemoAudioModule(out_channels, s.audio_inner, opts.heads, opts.audio_dim, opts.groups, s.audio_last)
            if opts.audio_joint else
            AudioAttention(out_channels, s.audio_inner, opts.heads, opts.audio_dim, opts.groups, opts.audio_masked,
                           opts.audio_shared)
            for s in specs if s.audio_inner is not None
        )
        self.motion_modules = nn.ModuleList(
            TemporalModule(out_channels, opts.temporal_heads, opts.temporal_max_len, opts.temporal_groups, opts.speed_dim)
            for s in specs if s.temporal
        )

    def _layer(self, i: int, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        return self._conditioning(i, self._resnet(i, h, ctx), ctx)

    def _resnet(self, i: int, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        if self.joint_frame_norm:
            return resnet_over_frames(self.resnets[i], h, ctx.temb, ctx.num_frames)
        return self.resnets[i](h, ctx.temb)

    def _conditioning(self, i: int, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        """Spatial (reference) attention, audio attention and temporal module of layer i."""
        motion = None
        if ctx.plain_features is not None and not len(self.attentions):
            ctx.plain_features.append(h)
        if len(self.attentions):
            attn = self.attentions[i]
            reference = ctx.reference[attn.slot] if ctx.reference is not None else None
            h, feature = attn(h, ctx.context, reference, ctx.cache)
            if ctx.features is not None:
                ctx.features.append(feature)
            motion = ctx.motion[attn.slot] if ctx.motion is not None else None
        if len(self.audio_modules) and ctx.joint_audio is not None:
            h, tokens = self.audio_modules[i](h, ctx.joint_audio, ctx.emotion)
            ctx.joint_audio = tokens if tokens is not None else ctx.joint_audio
        elif len(self.audio_modules):
            masks = ctx.masks[self.depth] if ctx.masks is not None else None
            h = self.audio_modules[i](h, ctx.audio, masks, ctx.region_weights)
        # Attention-free (lowest resolution) blocks have no reference features to join; Hallo
        # never runs their temporal modules at all.
        if len(self.motion_modules) and (len(self.attentions) or ctx.run_lowres_temporal):
            module = self.motion_modules[i]
            if ctx.memory is not None:
                h = memory_temporal_module(module, h, ctx.num_frames, ctx.memory[module.memory_slot])
            else:
                h = self._temporal(module, h, motion, ctx)
        return h

    @staticmethod
    def _temporal(module: TemporalModule, h: torch.Tensor, motion: torch.Tensor | None, ctx: UNetContext):
        """Motion-frame features are joined before the clip's frames on the frame axis; the module
        leaves their outputs out."""
        if motion is None:
            return module(h, ctx.num_frames, ctx.speed, cache=ctx.cache)
        bf, c, height, width = h.shape
        b, f = bf // ctx.num_frames, ctx.num_frames
        n = motion.shape[0] // b
        joined = torch.cat([motion.reshape(b, n, c, height, width).to(h.dtype), h.view(b, f, c, height, width)], dim=1)
        return module(joined.view(b * (n + f), c, height, width), n + f, ctx.speed, drop=n, cache=ctx.cache)


class DownBlock(UNetLayers):
    def __init__(self, in_channels: int, out_channels: int, specs: list[LayerSpec], depth: int,
                 add_downsample: bool, opts: BlockOptions) -> None:
        super().__init__()
        ins = [in_channels] + [out_channels] * (len(specs) - 1)
        self._build_layers(ins, out_channels, specs, depth, opts)
        if add_downsample:
            self.downsamplers = nn.ModuleList([Downsample2D(out_channels, use_conv=True, padding=1, name="op")])
        else:
            self.downsamplers = None

    def forward(self, h: torch.Tensor, ctx: UNetContext, downsample: bool = True
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for i in range(len(self.resnets)):
            h = self._layer(i, h, ctx)
            skips.append(h)
        if self.downsamplers is not None and downsample:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class MidBlock(UNetLayers):
    """resnet → (transformer → audio → temporal → resnet)."""

    def __init__(self, channels: int, spec: LayerSpec, opts: BlockOptions) -> None:
        super().__init__()
        self._build_layers([channels, channels], channels, [spec], depth=3, opts=opts)

    def forward(self, h: torch.Tensor, ctx: UNetContext) -> torch.Tensor:
        h = self._conditioning(0, self._resnet(0, h, ctx), ctx)
        return self._resnet(1, h, ctx)


class UpBlock(UNetLayers):
    def __init__(self, in_channels: int, prev_channels: int, out_channels: int, specs: list[LayerSpec],
                 depth: int, add_upsample: bool, opts: BlockOptions) -> None:
        super().__init__()
        n = len(specs)
        ins = []
        for i in range(n):
            skip = in_channels if i == n - 1 else out_channels
            ins.append((prev_channels if i == 0 else out_channels) + skip)
        self._build_layers(ins, out_channels, specs, depth, opts)
        if add_upsample:
            self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True)])
        else:
            self.upsamplers = None

    def forward(self, h: torch.Tensor, skips: list[torch.Tensor], ctx: UNetContext,
                upsample_size: tuple[int, int] | None = None) -> torch.Tensor:
        for i in range(len(self.resnets)):  # skips are taken last first, without changing the list
            h = torch.cat([h, skips[-1 - i]], dim=1)
            h = self._layer(i, h, ctx)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, output_size=upsample_size)
        return h


def group_norm_over_frames(norm: nn.GroupNorm, x: torch.Tensor, frames: int) -> torch.Tensor:
    """`norm` on [B·F, C, H, W] with each group's statistics taken over the item's F frames together."""
    bf, c, height, width = x.shape
    y = x.view(bf // frames, frames, c, height * width).transpose(1, 2)  # B, C, F, HW: groups span the frames
    y = F.group_norm(y, norm.num_groups, norm.weight, norm.bias, norm.eps)
    return y.transpose(1, 2).reshape(bf, c, height, width)


def resnet_over_frames(resnet: ResnetBlock2D, x: torch.Tensor, temb: torch.Tensor, frames: int) -> torch.Tensor:
    """diffusers' ResnetBlock2D ("default" time embedding) on [B·F, C, H, W] with its GroupNorms taken over each
    item's F frames together, as a plain GroupNorm on MEMO's [B, C, F, H, W] tensors does."""
    h = resnet.conv1(resnet.nonlinearity(group_norm_over_frames(resnet.norm1, x, frames)))
    h = h + resnet.time_emb_proj(resnet.nonlinearity(temb))[:, :, None, None]
    h = resnet.conv2(resnet.dropout(resnet.nonlinearity(group_norm_over_frames(resnet.norm2, h, frames))))
    shortcut = resnet.conv_shortcut(x) if resnet.conv_shortcut is not None else x
    return (shortcut + h) / resnet.output_scale_factor
