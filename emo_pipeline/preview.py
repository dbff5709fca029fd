"""Step previews without the VAE's decoder: a linear map from the 4 latent channels to RGB, fitted to
the VAE in use (the Latent2RGB idea of ComfyUI's previews), shown at the video's own size.

SD's VAE (sd-vae-ft-mse, used by Hallo, EchoMimic and MEMO) has well-known factors; any other VAE
folder can hold its own, fitted by least squares from encoded images and their decodes (`fit_latent_rgb`, written by
benchmarks/fit_latent_rgb.py): the bundled demo's VAE keeps them in models/demo/vae/latent_rgb.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

from .io.safe_files import write_atomic

FILE = "latent_rgb.json"  # beside a VAE folder's config.json


@dataclass(frozen=True)
class LatentRGB:
    factors: tuple[tuple[float, float, float], ...]  # one (R, G, B) row per latent channel
    bias: tuple[float, float, float]
    scaling_factor: float  # the latents the factors take are the VAE's latents times this

    def to_rgb(self, latent: torch.Tensor, scaling_factor: float) -> torch.Tensor:
        """One latent [C, h, w], scaled by `scaling_factor` as the sampler holds it → RGB [h, w, 3] in 0..1."""
        x = rearrange(latent.float().cpu(), "c h w -> h w c") * (self.scaling_factor / scaling_factor)
        rgb = x @ torch.tensor(self.factors) + torch.tensor(self.bias)
        return ((rgb + 1) / 2).clamp(0, 1)

    def save(self, path: str | Path, **about) -> None:
        data = {"factors": [list(row) for row in self.factors], "bias": list(self.bias),
                "scaling_factor": self.scaling_factor, **about}
        write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())

    @classmethod
    def load(cls, path: str | Path) -> "LatentRGB":
        data = json.loads(Path(path).read_text())
        return cls(tuple(tuple(float(v) for v in row) for row in data["factors"]),
                   tuple(float(v) for v in data["bias"]), float(data["scaling_factor"]))


# SD's VAE: the factors ComfyUI's previews use for SD1.x latents (comfy/latent_formats.py, SD15), no bias.
SD_VAE = LatentRGB(factors=((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
                            (-0.2120, -0.2616, -0.7177)), bias=(0.0, 0.0, 0.0), scaling_factor=0.18215)
SD_VAE_BLOCKS = (128, 256, 512, 512)


def latent_rgb_for(vae: torch.nn.Module) -> LatentRGB | None:
    """The map for this VAE: its folder's latent_rgb.json, else SD's for a VAE of SD's shape; None for
    another VAE without one (no preview rather than a meaningless one)."""
    config = getattr(vae, "config", None)
    folder = getattr(config, "_name_or_path", None)
    if folder and (Path(folder) / FILE).is_file():
        return LatentRGB.load(Path(folder) / FILE)
    if config is not None and getattr(config, "latent_channels", None) == 4 \
            and tuple(getattr(config, "block_out_channels", ())) == SD_VAE_BLOCKS:
        return SD_VAE
    return None


def preview_size(latent_size: int, vae_downscale: int) -> int:
    """The preview's side: the frames' own (latent cells × pixels per cell)."""
    return latent_size * vae_downscale


@torch.no_grad()
def fit_latent_rgb(vae: torch.nn.Module, images: torch.Tensor, scaling_factor: float, spread: float = 0.5,
                   seed: int = 0) -> LatentRGB:
    """Least squares, with a bias, from latents to the VAE's own decode of them averaged over each latent
    cell (in -1..1). The latents are those of `images` [N, H, W, 3] (0..1) moved by noise of `spread` times
    each channel's spread: a sampler's estimates lie near the latents of images, not on them, and a map
    fitted on exact encodings alone misreads them (the demo's: 0.30 instead of 0.70 correlation)."""
    pixels = rearrange(images.float(), "n h w c -> n c h w") * 2 - 1
    latents = vae.encode(pixels).latent_dist.mean * scaling_factor
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    latents = latents + spread * noise * latents.std(dim=(0, 2, 3), keepdim=True)
    decoded = vae.decode(latents / scaling_factor).sample.clamp(-1, 1)
    target = F.avg_pool2d(decoded, decoded.shape[-1] // latents.shape[-1])
    x = rearrange(latents.double(), "n c h w -> (n h w) c")
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    y = rearrange(target.double(), "n c h w -> (n h w) c")
    solution = torch.linalg.lstsq(x, y).solution  # [C + 1, 3]
    return LatentRGB(tuple(tuple(round(float(v), 5) for v in row) for row in solution[:-1]),
                     tuple(round(float(v), 5) for v in solution[-1]), scaling_factor)


def drawn_faces(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """Images to fit on: drawn faces of the synthetic set (random looks, mouths, turns, blinks), [N, S, S, 3]."""
    from .training.synthetic import draw_face, random_look

    gen = torch.Generator().manual_seed(seed)
    faces = []
    for _ in range(count):
        look = random_look(gen)
        mouth, yaw, blink = (float(v) for v in torch.rand(3, generator=gen))
        faces.append(draw_face(size, look, mouth, (yaw - 0.5) * 0.6, float(blink > 0.8)))
    return torch.stack(faces)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two tensors' values."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-12))
