"""An EMOPipeline assembled from a model's files on disk (which files, and where they are looked for:
`io/model_files.py`), in the precision and memory mode asked for.

Only the SD1.5 UNet *config* is needed, and it is built in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .audio.encoder import AudioEncoder
from .config import EMOConfig
from .io.loading import PRECISIONS, load_net, network_config
from .io.model_files import audio_encoder_path, find_net, vae_path
from .models.fp8 import store_weights_fp8
from .pipeline import EMOPipeline


def default_dtype(config: EMOConfig, device: torch.device | str) -> torch.dtype:
    """The precision the model family's own code uses on a GPU (fp16 for Hallo and EchoMimic, bf16 for MEMO);
    fp32 elsewhere."""
    return PRECISIONS[config.spec.gpu_precision] if torch.device(device).type == "cuda" else torch.float32


def load_pipeline(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
                  shared: tuple[Path, ...] = (), vae: str | Path | None = None, *, low_vram: bool = False,
                  fp8_weights: bool = False, compile: bool = False, config: EMOConfig | None = None,
                  audio_encoder: str | Path | None = None, compute_device: torch.device | None = None) -> EMOPipeline:
    """Network, VAE and wav2vec2 from disk; the network streams straight into `device` and `dtype` (None: the
    family's own, `default_dtype`).
    `vae` overrides where the VAE comes from (a folder or a single file, e.g. ComfyUI's models/vae/).
    With `fp8_weights` the network is loaded on the CPU, stored in fp8 there, then moved, so the
    device never holds it in full precision. `low_vram` and `compile`: see EMOPipeline. `config`: the
    network's config when the files cannot tell it (tiny test models). `audio_encoder` overrides where
    the audio encoder comes from (e.g. a wav2vec2 file in ComfyUI's models/audio_encoders/). `compute_device`:
    where the pipeline will run when that is not `device` (ComfyUI loads onto the offload device first), for
    the default precision."""
    from .vae import load_vae

    net_path = find_net(Path(model))
    config = config or network_config(net_path)
    dtype = dtype or default_dtype(config, compute_device or device)
    vae_file = Path(vae) if vae else vae_path(net_path, shared)
    audio_file = Path(audio_encoder) if audio_encoder else audio_encoder_path(net_path, config, shared)
    if config.spec.audio_encoder == "whisper":
        from .audio.whisper import WhisperAudioEncoder

        audio = WhisperAudioEncoder.from_file(audio_file)
    else:
        audio = AudioEncoder.from_pretrained(audio_file, normalize=config.spec.wav2vec_normalize)
    net = load_net(net_path, config, device="cpu" if fp8_weights else device, dtype=dtype)
    if fp8_weights:
        store_weights_fp8(net)
    return EMOPipeline(net, load_vae(vae_file, dtype=dtype), audio,
                       device=device, dtype=dtype, low_vram=low_vram, compile=compile)
