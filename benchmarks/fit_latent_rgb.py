"""Fit a VAE's latent-to-RGB preview factors (emo_pipeline/preview.py) and store them beside it.

    python benchmarks/fit_latent_rgb.py models/demo/vae --scaling-factor 0.16133

Encodes drawn faces of the synthetic set at the VAE's size, moves the latents by some noise (a
sampler's estimates lie near such latents), solves the least-squares map from each latent cell's 4
channels (scaled as the sampler holds them) to the mean colour of the decoded pixels it covers, writes <vae>/latent_rgb.json, and prints how well the map's image matches the VAE's own
decode of held-out latents (Pearson correlation; 1 would be a perfect preview). The scaling factor
is the model's (its config's vae_scaling_factor), which may differ from the VAE's config.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emo_pipeline.preview import FILE, correlation, drawn_faces, fit_latent_rgb, latent_rgb_for  # noqa: E402
from emo_pipeline.vae import load_vae  # noqa: E402

FIT_IMAGES, FIT_SEED, HELD_OUT_SEED = 96, 0, 1


@torch.no_grad()
def preview_match(vae, mapping, scaling_factor: float, images: torch.Tensor) -> float:
    """Correlation of the map's preview with the VAE's decode of the same latents, on the latent grid."""
    latents = vae.encode(rearrange(images, "n h w c -> n c h w") * 2 - 1).latent_dist.mean * scaling_factor
    decoded = (vae.decode(latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1)
    decoded = F.avg_pool2d(decoded, decoded.shape[-1] // latents.shape[-1])
    previews = torch.stack([mapping.to_rgb(latent, scaling_factor) for latent in latents])
    return correlation(previews, rearrange(decoded, "n c h w -> n h w c"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("vae", type=Path, help="a diffusers VAE folder")
    parser.add_argument("--scaling-factor", type=float, default=None,
                        help="the model's latent scale (default: the VAE config's scaling_factor)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the VAE config's sample_size)")
    args = parser.parse_args()
    torch.manual_seed(0)
    vae = load_vae(args.vae).eval()
    scale = args.scaling_factor or vae.config.scaling_factor
    size = args.size or vae.config.sample_size
    before = latent_rgb_for(vae)
    mapping = fit_latent_rgb(vae, drawn_faces(FIT_IMAGES, size, FIT_SEED), scale)
    mapping.save(args.vae / FILE, fitted_on=f"{FIT_IMAGES} drawn faces of the synthetic set at {size} px, seed "
                 f"{FIT_SEED}, latents moved by noise of 0.5 channel std (benchmarks/fit_latent_rgb.py)",
                 images=FIT_IMAGES, seed=FIT_SEED, size=size)
    held_out = drawn_faces(32, size, HELD_OUT_SEED)
    print(f"wrote {args.vae / FILE}")
    print(f"held-out correlation with the VAE's decode: fitted {preview_match(vae, mapping, scale, held_out):.3f}")
    if before is not None:
        print(f"  (the factors used before: {preview_match(vae, before, scale, held_out):.3f})")


if __name__ == "__main__":
    main()
