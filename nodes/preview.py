"""The samplers' step previews: ComfyUI decides whether they are on (--preview-method); the picture is
the latent mapped to RGB with factors for the VAE in use (emo_pipeline/preview.py), at the frames' size."""

from __future__ import annotations

from typing import Callable

import torch
from PIL import Image

import comfy.latent_formats
import latent_preview

from ..emo_pipeline.pipeline import EMOPipeline
from ..emo_pipeline.preview import SD_VAE, latent_rgb_for, preview_size

PreviewTuple = tuple[str, Image.Image, int]


def step_previewer(pipeline: EMOPipeline) -> Callable[[torch.Tensor], PreviewTuple] | None:
    """x0 [B, C, h, w] (the first frame's latent) → ("JPEG", image, side) for ProgressBar.update_absolute;
    None when previews are off, or for a VAE without factors (no picture rather than a meaningless one)."""
    core = latent_preview.get_previewer(pipeline.device, comfy.latent_formats.SD15())
    mapping = latent_rgb_for(pipeline.vae)
    if core is None or mapping is None:
        return None
    config = pipeline.config
    side = min(preview_size(config.latent_size, config.vae_downscale),
               getattr(latent_preview, "MAX_PREVIEW_RESOLUTION", None) or 10**6)
    if mapping is SD_VAE and isinstance(core, latent_preview.TAESDPreviewerImpl):  # TAESD is SD's: use it then
        return lambda x0: ("JPEG", core.decode_latent_to_preview_image("JPEG", x0)[1], side)

    def preview(x0: torch.Tensor) -> PreviewTuple:
        rgb = mapping.to_rgb(x0[0], config.vae_scaling_factor)
        image = Image.fromarray((rgb * 255).round().to(torch.uint8).numpy())
        return ("JPEG", image.resize((side, side), Image.Resampling.BILINEAR), side)

    return preview
