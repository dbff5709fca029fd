"""The VAE: sd-vae-ft-mse as a diffusers folder, or as one file in either diffusers or the original
(LDM/ComfyUI `models/vae/`) key layout. Its configuration is built in, like the UNet's."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from .io.loading import CheckpointError, CheckpointReader, compare_keys, folder_model_error, read_json_object

# stabilityai/sd-vae-ft-mse config.json (the SD1.5 VAE shape).
SD_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "act_fn": "silu", "sample_size": 256, "scaling_factor": 0.18215,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def vae_downscale(vae: torch.nn.Module) -> int | None:
    """Pixels per latent cell of a diffusers AutoencoderKL: one halving between its blocks."""
    blocks = getattr(getattr(vae, "config", None), "block_out_channels", None)
    return 2 ** (len(blocks) - 1) if blocks else None


def _is_ldm(keys: list[str]) -> bool:
    return any(k.startswith(("encoder.down.", "first_stage_model.", "vae.encoder.down.")) for k in keys)


def load_vae(path: str | Path, config: dict | None = None, dtype: torch.dtype = torch.float32) -> AutoencoderKL:
    """A diffusers folder, or a single .safetensors/.pth/.ckpt VAE file (diffusers or LDM key names)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a diffusers VAE folder (no config.json).")
        read_json_object(path / "config.json", "a diffusers VAE folder")  # diffusers' own errors mislead
        try:
            return AutoencoderKL.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
            raise folder_model_error(path, "VAE", err) from None
    config = dict(config or SD_VAE_CONFIG)
    with CheckpointReader(path) as reader:
        state = {k: reader.tensor(k) for k in reader.keys()}
    if _is_ldm(list(state)):
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, config)
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    report = compare_keys({k: v.shape for k, v in vae.state_dict().items()}, {k: v.shape for k, v in state.items()})
    if not report.ok:
        raise CheckpointError(f"{path.name} is not an SD1.5-family VAE (sd-vae-ft-mse): {report.describe()}.")
    vae.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    return vae
