"""Hallo2's temporal CodeFormer: a VQGAN (encoder, 1024-code codebook, generator) whose codes are predicted
by a transformer, with a temporal self-attention in every transformer layer (Hallo2's video
super-resolution, `basicsr/archs/codeformer_arch.py` of fudan-generative-vision/hallo2).

Written from its description, not copied; module names follow its state dict (net_g.pth's `params_ema`),
so the file loads strictly. The flat `blocks` lists of the encoder and generator are kept because the
checkpoint's keys number them; which block's output is fused where is derived from the config.

Licence of the trained weights (and of the design): S-Lab License 1.0, non-commercial (see docs/upscaler.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class CodeFormerConfig:
    img_size: int = 512  # the aligned face's side
    nf: int = 64  # channels at full resolution
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)  # per level, full resolution first
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    emb_dim: int = 256  # a code's width
    codebook_size: int = 1024
    dim_embd: int = 512  # transformer width
    n_head: int = 8
    n_layers: int = 9
    connect_list: tuple[str, ...] = ("32", "64", "128", "256")  # resolutions whose encoder features are fused
    norm_groups: int = 32

    @property
    def latent_side(self) -> int:
        return self.img_size // 2 ** (len(self.ch_mult) - 1)

    def channels(self, resolution: int) -> int:
        level = (self.img_size // resolution).bit_length() - 1
        return self.nf * self.ch_mult[level]


HALLO2_SR = CodeFormerConfig()  # scripts/video_sr.py: dim_embd 512, codebook 1024, 8 heads, 9 layers


def tiny_codeformer_config() -> CodeFormerConfig:
    """A CPU-sized network of the same structure: 32² faces, a 16² code grid."""
    return CodeFormerConfig(img_size=32, nf=32, ch_mult=(1, 2), emb_dim=32, codebook_size=16, dim_embd=32,
                            n_head=2, n_layers=2, connect_list=("32",))


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int = 32):
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_out = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_out is None else self.conv_out(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over a feature map's positions (1×1 convolutions for q, k, v, out)."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        side = x.shape[-1]
        q, k, v = (rearrange(f(h), "b c h w -> b 1 (h w) c") for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(rearrange(out, "b 1 (h w) c -> b c h w", w=side))


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # right/bottom only: the VQGAN's asymmetric padding


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """Image → code-grid features; `taps` maps a resolution to the block after which its features are kept
    for the generator's fusion (the last residual block of that level)."""

    def __init__(self, cfg: CodeFormerConfig):
        super().__init__()
        g = cfg.norm_groups
        blocks: list[nn.Module] = [nn.Conv2d(3, cfg.nf, 3, padding=1)]
        self.taps: dict[int, int] = {}
        res, c = cfg.img_size, cfg.nf
        for level, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(c, cfg.nf * mult, g))
                c = cfg.nf * mult
                self.taps[res] = len(blocks) - 1
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c, g))
            if level != len(cfg.ch_mult) - 1:
                blocks.append(Downsample(c))
                res //= 2
        blocks += [ResBlock(c, c, g), AttnBlock(c, g), ResBlock(c, c, g), _norm(c, g),
                   nn.Conv2d(c, cfg.emb_dim, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, keep: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        at = {self.taps[r]: r for r in keep}
        kept = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in at:
                kept[at[i]] = x
        return x, kept


class Generator(nn.Module):
    """Codes → image; `taps` maps a resolution to the block after which encoder features are fused (the
    first residual block of that level)."""

    def __init__(self, cfg: CodeFormerConfig):
        super().__init__()
        g = cfg.norm_groups
        c = cfg.nf * cfg.ch_mult[-1]
        res = cfg.latent_side
        blocks: list[nn.Module] = [nn.Conv2d(cfg.emb_dim, c, 3, padding=1), ResBlock(c, c, g), AttnBlock(c, g),
                                   ResBlock(c, c, g)]
        self.taps: dict[int, int] = {}
        for level in reversed(range(len(cfg.ch_mult))):
            out = cfg.nf * cfg.ch_mult[level]
            for j in range(cfg.res_blocks):
                blocks.append(ResBlock(c, out, g))
                c = out
                if j == 0:
                    self.taps[res] = len(blocks) - 1
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(c, g))
            if level != 0:
                blocks.append(Upsample(c))
                res *= 2
        blocks += [_norm(c, g), nn.Conv2d(c, 3, 3, padding=1)]
        self.blocks = nn.ModuleList(blocks)


class VectorQuantizer(nn.Module):
    """The codebook; at inference it is only looked up (the transformer picks the codes)."""

    def __init__(self, codebook_size: int, emb_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)


class Attention(nn.Module):
    """Multi-head attention with a packed q/k/v projection (torch's MultiheadAttention's parameter names);
    tokens [B, N, C]. The position embedding goes into queries and keys, not values."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        qk = x + pos
        q, k, v = (rearrange(F.linear(t, w, b), "b n (h d) -> b h n d", h=self.heads)
                   for t, w, b in ((qk, wq, bq), (qk, wk, bk), (x, wv, bv)))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(rearrange(out, "b h n d -> b n (h d)"))


class TemporalTransformerLayer(nn.Module):
    """Pre-norm spatial attention and feed-forward over a frame's code positions, then the same over the
    frames of a chunk at each code position (Hallo2's addition to CodeFormer)."""

    def __init__(self, dim: int, heads: int, mlp: int):
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.linear1, self.linear2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        self.temp_attn = Attention(dim, heads)
        self.temp_norm, self.temp_ffn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.temp_linear1, self.temp_linear2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, frames: int) -> torch.Tensor:
        """x [B·F, N, C] (frames of a clip consecutive); pos [N, C]."""
        x = x + self.self_attn(self.norm1(x), pos)
        x = x + self.linear2(F.gelu(self.linear1(self.norm2(x))))
        # each code position attends across the frames; its (spatial) position embedding comes along
        t = rearrange(x, "(b f) n c -> (b n) f c", f=frames)
        t_pos = rearrange(pos, "n c -> n 1 c").repeat(len(x) // frames, 1, 1)
        t = t + self.temp_attn(self.temp_norm(t), t_pos)
        x = rearrange(t, "(b n) f c -> (b f) n c", n=x.shape[1])
        return x + self.temp_linear2(F.gelu(self.temp_linear1(self.temp_ffn_norm(x))))


class FuseSFT(nn.Module):
    """Controllable feature transformation: encoder features give a scale and shift for the generator's,
    weighted by the fidelity w."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels, groups)

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2, True),
                                 nn.Conv2d(channels, channels, 3, padding=1))

        self.scale, self.shift = branch(), branch()

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        h = self.encode_enc(torch.cat([enc, dec], dim=1))
        return w * (dec * self.scale(h) + self.shift(h)) + dec


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`content` given the per-channel mean and (unbiased) spread of `style`: the codebook's features
    take the colour and light of the low-quality face's."""
    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    c_mean, c_std = stats(content)
    s_mean, s_std = stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class TemporalCodeFormer(nn.Module):
    def __init__(self, config: CodeFormerConfig = HALLO2_SR):
        super().__init__()
        cfg = self.config = config
        if cfg.latent_side ** 2 < 1 or cfg.img_size % 2 ** (len(cfg.ch_mult) - 1):
            raise ValueError(f"img_size {cfg.img_size} does not halve {len(cfg.ch_mult) - 1} times evenly.")
        self.encoder = Encoder(cfg)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.emb_dim)
        self.generator = Generator(cfg)
        self.position_emb = nn.Parameter(torch.zeros(cfg.latent_side ** 2, cfg.dim_embd))
        self.feat_emb = nn.Linear(cfg.emb_dim, cfg.dim_embd)
        self.ft_layers = nn.Sequential(*(TemporalTransformerLayer(cfg.dim_embd, cfg.n_head, 2 * cfg.dim_embd)
                                         for _ in range(cfg.n_layers)))
        self.idx_pred_layer = nn.Sequential(nn.LayerNorm(cfg.dim_embd),
                                            nn.Linear(cfg.dim_embd, cfg.codebook_size, bias=False))
        self.fuse_convs_dict = nn.ModuleDict({r: FuseSFT(cfg.channels(int(r)), cfg.norm_groups)
                                              for r in cfg.connect_list})
        for r in cfg.connect_list:
            if int(r) not in self.encoder.taps or int(r) not in self.generator.taps or int(r) <= cfg.latent_side:
                raise ValueError(f"connect_list resolution {r} is not a level of a {cfg.img_size}² CodeFormer above "
                                 f"its {cfg.latent_side}² code grid.")

    @torch.no_grad()
    def forward(self, faces: torch.Tensor, w: float = 0.5, adain_codes: bool = True,
                frames_at_once: int | None = None, return_codes: bool = False):
        """Aligned faces [B, F, 3, S, S] in -1..1 → restored faces, the same shape (not clamped).

        The F frames of a clip attend to each other in the transformer; the convolutional encoder and
        generator run `frames_at_once` frames at a time (default all), which bounds their memory.
        `return_codes`: also the chosen codes [B·F, N]."""
        b, f = faces.shape[:2]
        x = rearrange(faces, "b f c h w -> (b f) c h w")
        step = frames_at_once or len(x)
        keep = {int(r) for r in self.config.connect_list} if w > 0 else set()
        encoded = [self.encoder(x[i: i + step], keep) for i in range(0, len(x), step)]
        lq = torch.cat([e[0] for e in encoded])
        tokens = self.feat_emb(rearrange(lq, "n c h w -> n (h w) c"))
        for layer in self.ft_layers:
            tokens = layer(tokens, self.position_emb, f)
        logits = self.idx_pred_layer(tokens)
        codes = logits.softmax(-1).topk(1, dim=-1).indices[..., 0]  # top-1 (as Hallo2: on the softmax)
        quant = rearrange(self.quantize.embedding(codes), "n (h w) c -> n c h w", w=lq.shape[-1])
        if adain_codes:
            quant = adain(quant, lq)
        fuse_at = {self.generator.taps[r]: r for r in keep}
        out = []
        for (_, kept), start in zip(encoded, range(0, len(x), step)):
            y = quant[start: start + step]
            for i, block in enumerate(self.generator.blocks):
                y = block(y)
                if i in fuse_at:
                    r = fuse_at[i]
                    y = self.fuse_convs_dict[str(r)](kept[r], y, w)
            out.append(y)
        out = rearrange(torch.cat(out), "(b f) c h w -> b f c h w", b=b)
        return (out, codes) if return_codes else out
