"""What the reference harnesses of both families share (hallo_side_by_side.py, echomimic_reference.py).

SD15_UNET_CONFIG: the Stable Diffusion 1.5 UNet config (unet/config.json) that the reference code of
both families starts from: Hallo's UNets (SD1.5) and EchoMimic's (sd-image-variations-diffusers,
the same layout with cross-attention width 768). Not available offline, so it is written out
here; their 3-D UNets switch the block types (see each script).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator

SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": False,
}


@contextmanager
def quiet() -> Iterator[None]:
    """Hides the notices the reference code gets from today's libraries (deprecated diffusers
    arguments and layers, config keys its classes do not take, torch.utils.checkpoint without
    `use_reentrant`); none of them changes a result."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        diffusers_logging.set_verbosity(level)
