"""Finding a model's parts on disk and assembling an EMOPipeline from them.

A model is one folder (or the network file inside it):

    <model>/net.safetensors | net.pth   the EMO network (Hallo's net.pth works as downloaded)
    <model>/vae/                        diffusers AutoencoderKL folder (sd-vae-ft-mse)
    <model>/wav2vec/                    transformers Wav2Vec2 folder (wav2vec2-base-960h)

The VAE and wav2vec folders are looked for beside the network file first, then in the
`shared` folders given (ComfyUI's models/emo/), then one level up (models/emo/<name>/net.pth
finds models/emo/vae/), so several networks can share them. Either may also be a single
.safetensors file (see `vae.load_vae` and `AudioEncoder.from_pretrained`).

Only the SD1.5 UNet *config* is needed, and it is built in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .audio.encoder import AudioEncoder
from .loading import PICKLE_SUFFIXES, load_net
from .models.fp8 import store_weights_fp8
from .pipeline import EMOPipeline

NET_NAMES = ("net.safetensors", "net.pth")
VAE_NAMES = ("vae", "sd-vae-ft-mse", "vae.safetensors", "sd-vae-ft-mse.safetensors",
             "vae-ft-mse-840000-ema-pruned.safetensors")
WAV2VEC_NAMES = ("wav2vec", "wav2vec2-base-960h", "wav2vec/wav2vec2-base-960h", "wav2vec2-base-960h.safetensors",
                 "wav2vec.safetensors")


def find_net(model: Path) -> Path:
    if model.is_file():
        return model
    if not model.is_dir():
        raise FileNotFoundError(f"Model not found: {model} (give a model folder or its network file).")
    for name in NET_NAMES:
        if (model / name).is_file():
            return model / name
    candidates = [p for p in model.iterdir() if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES]
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"No network file in {model}: put Hallo's or Hallo2's net.pth (or our net.safetensors) there."
    )


def _find_part(roots: list[Path], names: tuple[str, ...], what: str) -> Path:
    """A model part: a folder with config.json, or a single .safetensors file."""
    for root in roots:
        for name in names:
            candidate = root / name
            if (candidate / "config.json").is_file() or (candidate.suffix == ".safetensors" and candidate.is_file()):
                return candidate
    where = " or ".join(str(r / names[0]) for r in roots)
    raise FileNotFoundError(
        f"No {what} found: put it in {where} (a folder with config.json and its weights), or as {names[-2]}."
    )


def load_pipeline(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  shared: tuple[Path, ...] = (), vae: str | Path | None = None, *, low_vram: bool = False,
                  fp8_weights: bool = False, compile: bool = False) -> EMOPipeline:
    """Network, VAE and wav2vec2 from disk; the network streams straight into `device` and `dtype`.
    `vae` overrides where the VAE comes from (a folder or a single file, e.g. ComfyUI's models/vae/).
    With `fp8_weights` the network is loaded on the CPU, stored in fp8 there, then moved, so the
    device never holds it in full precision. `low_vram` and `compile`: see EMOPipeline."""
    from .vae import load_vae

    model = Path(model)
    net_path = find_net(model)
    roots = []
    for root in (net_path.parent, *map(Path, shared), net_path.parent.parent):
        if root not in roots:
            roots.append(root)
    vae_path = Path(vae) if vae else _find_part(roots, VAE_NAMES, "VAE (sd-vae-ft-mse)")
    wav2vec_path = _find_part(roots, WAV2VEC_NAMES, "wav2vec2 model (wav2vec2-base-960h)")
    net = load_net(net_path, device="cpu" if fp8_weights else device, dtype=dtype)
    if fp8_weights:
        store_weights_fp8(net)
    return EMOPipeline(net, load_vae(vae_path, dtype=dtype), AudioEncoder.from_pretrained(wav2vec_path),
                       device=device, dtype=dtype, low_vram=low_vram, compile=compile)
