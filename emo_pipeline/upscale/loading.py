"""Finding and loading the high-resolution stage's files: Hallo2's hallo2/net_g.pth (temporal CodeFormer)
and realesrgan/RealESRGAN_x2plus.pth, both read from their `params_ema` with torch.load(weights_only=True)
and loaded strictly."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..io.loading import unreadable_weights_error
from .codeformer import HALLO2_SR, CodeFormerConfig, TemporalCodeFormer
from .rrdbnet import REALESRGAN_X2PLUS, RRDBConfig, RRDBNet

CODEFORMER_FILE = "hallo2/net_g.pth"
REALESRGAN_FILE = "realesrgan/RealESRGAN_x2plus.pth"
DOWNLOAD_NAME = "hallo2-upscaler"
FETCH_HINT = (f"python -m emo_pipeline download {DOWNLOAD_NAME} (into the model folder it prints: ComfyUI's models/emo "
              "when the pack is in custom_nodes; --to for another folder)")


def find_file(folders: list[Path], relative: str) -> Path | None:
    """`relative` (e.g. hallo2/net_g.pth) in each folder, then its file name alone (a folder that holds it)."""
    for folder in folders:
        for candidate in (Path(folder) / relative, Path(folder) / Path(relative).name):
            if candidate.is_file():
                return candidate
    return None


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """A BasicSR checkpoint's weights: its `params_ema` (else `params`, else the file itself as a state dict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Fetch it with {FETCH_HINT}.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal, a cut-short zip or random bytes: said as it is
        raise unreadable_weights_error(path, err, f"the file from {FETCH_HINT}") from None
    if isinstance(data, dict):
        for key in ("params_ema", "params"):
            if isinstance(data.get(key), dict):
                return data[key]
        if data and all(isinstance(v, torch.Tensor) for v in data.values()):
            return data
    raise ValueError(f"{path.name} holds no state dict (no 'params_ema' or 'params' entry of tensors); is it "
                     "Hallo2's net_g.pth or RealESRGAN_x2plus.pth?")


def load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> nn.Module:
    """Every key and shape must match: a file of another network says so instead of loading half."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} in the file, "
                 f"{tuple(expected[wrong[0]].shape)} expected)" if wrong else ""]
        raise ValueError(f"{Path(path).name} is not {what}: its keys differ ({'; '.join(p for p in parts if p)}). "
                         f"Fetch the right file with {FETCH_HINT}.")
    net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return net.eval()


def load_codeformer(path: Path, config: CodeFormerConfig = HALLO2_SR) -> TemporalCodeFormer:
    return load_strict(TemporalCodeFormer(config), read_state(path), path, "Hallo2's net_g.pth (temporal CodeFormer)")


def load_realesrgan(path: Path, config: RRDBConfig = REALESRGAN_X2PLUS) -> RRDBNet:
    return load_strict(RRDBNet(config), read_state(path), path, "RealESRGAN_x2plus.pth (RRDBNet ×2)")
