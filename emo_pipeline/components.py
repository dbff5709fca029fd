"""Finding a model's parts on disk and assembling an EMOPipeline from them.

A model is one folder (or the network file inside it):

    <model>/net.safetensors | net.pth   the EMO network (Hallo's net.pth works as downloaded)
    <model>/vae/                        diffusers AutoencoderKL folder (sd-vae-ft-mse)
    <model>/wav2vec/                    transformers Wav2Vec2 folder (wav2vec2-base-960h)

The VAE and wav2vec folders are looked for beside the network file first, then in the
`shared` folders given (ComfyUI's models/emo/), so several networks can share them.

Only the SD1.5 UNet *config* is needed, and it is built in.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .audio.encoder import AudioEncoder
from .loading import PICKLE_SUFFIXES, load_net
from .pipeline import EMOPipeline

NET_NAMES = ("net.safetensors", "net.pth")
VAE_DIRS = ("vae", "sd-vae-ft-mse")
WAV2VEC_DIRS = ("wav2vec", "wav2vec2-base-960h", "wav2vec/wav2vec2-base-960h")


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


def _find_dir(roots: list[Path], names: tuple[str, ...], what: str) -> Path:
    for root in roots:
        for name in names:
            if (root / name / "config.json").is_file():
                return root / name
    where = " or ".join(str(r / names[0]) for r in roots)
    raise FileNotFoundError(f"No {what} found: put it in {where} (a folder with config.json and its weights).")


def load_pipeline(model: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                  shared: tuple[Path, ...] = ()) -> EMOPipeline:
    from diffusers import AutoencoderKL

    model = Path(model)
    net_path = find_net(model)
    roots = [net_path.parent, *(Path(p) for p in shared if Path(p) != net_path.parent)]
    vae_dir = _find_dir(roots, VAE_DIRS, "VAE (sd-vae-ft-mse, diffusers format)")
    wav2vec_dir = _find_dir(roots, WAV2VEC_DIRS, "wav2vec2 model (wav2vec2-base-960h, transformers format)")
    net = load_net(net_path)
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True)
    encoder = AudioEncoder.from_pretrained(wav2vec_dir)
    return EMOPipeline(net, vae, encoder, device=device, dtype=dtype)
