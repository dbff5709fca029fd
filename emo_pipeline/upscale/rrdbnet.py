"""RealESRGAN's generator (ESRGAN's RRDBNet) for the background, with tiled inference.

Our own module rather than spandrel's (the loader ComfyUI core uses): spandrel requires torchvision,
which this engine otherwise never needs, and RealESRGAN_x2plus is the one architecture Hallo2 uses here.
Parameter names follow the released RealESRGAN_x2plus.pth (`params_ema`), so it loads strictly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class RRDBConfig:
    scale: int = 2  # RealESRGAN_x2plus: ×2 (the input is pixel-unshuffled by 2, then upsampled ×4)
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    in_ch: int = 3
    out_ch: int = 3


REALESRGAN_X2PLUS = RRDBConfig()


def tiny_rrdb_config() -> RRDBConfig:
    return RRDBConfig(num_feat=8, num_block=1, num_grow_ch=4)


class ResidualDenseBlock(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.conv1, self.conv2, self.conv3, self.conv4 = (nn.Conv2d(feat + i * grow, grow, 3, padding=1)
                                                          for i in range(4))
        self.conv5 = nn.Conv2d(feat + 4 * grow, feat, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, feat: int, grow: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(feat, grow) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, config: RRDBConfig = REALESRGAN_X2PLUS):
        super().__init__()
        if config.scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, not {config.scale}.")
        self.config = config
        self.unshuffle = 4 // config.scale  # the trunk always upsamples ×4
        f = config.num_feat
        self.conv_first = nn.Conv2d(config.in_ch * self.unshuffle ** 2, f, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(f, config.num_grow_ch) for _ in range(config.num_block)))
        self.conv_body, self.conv_up1, self.conv_up2, self.conv_hr = (nn.Conv2d(f, f, 3, padding=1) for _ in range(4))
        self.conv_last = nn.Conv2d(f, config.out_ch, 3, padding=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in 0..1 (H, W divisible by 4 // scale) → [B, 3, H·scale, W·scale] (not clamped)."""
        s = self.unshuffle
        if s > 1:
            x = rearrange(x, "b c (h s1) (w s2) -> b (c s1 s2) h w", s1=s, s2=s)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


def upscale_tiled(net: RRDBNet, image: torch.Tensor, tile: int = 400, pad: int = 40) -> torch.Tensor:
    """[B, 3, H, W] in 0..1 → ×scale, clamped, in tiles of `tile` pixels each seen with `pad` pixels of its
    surroundings (Hallo2's background settings: 400 and 40), so memory is bounded by the tile, not the photo.
    Odd sizes are reflect-padded to what the pixel-unshuffle needs, and cropped back after."""
    s, m = net.config.scale, net.unshuffle
    h, w = image.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
    H, W = image.shape[-2:]
    tile = max(m, tile - tile % m)
    pad -= pad % m
    out = image.new_empty(image.shape[0], net.config.out_ch, H * s, W * s)
    for y in range(0, H, tile):
        for x in range(0, W, tile):
            y1, x1 = min(y + tile, H), min(x + tile, W)
            ya, xa, yb, xb = max(y - pad, 0), max(x - pad, 0), min(y1 + pad, H), min(x1 + pad, W)
            result = net(image[..., ya:yb, xa:xb])
            out[..., y * s: y1 * s, x * s: x1 * s] = result[..., (y - ya) * s: (y1 - ya) * s, (x - xa) * s: (x1 - xa) * s]
    return out[..., : h * s, : w * s].clamp(0, 1)
