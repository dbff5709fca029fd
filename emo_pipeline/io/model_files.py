"""Where a model's parts lie on disk: its network file (or EchoMimic's and MEMO's folders), its VAE and
its audio encoder.

A model is one folder (or the network file inside it):

    <model>/net.safetensors | net.pth   the EMO network (Hallo's net.pth works as downloaded)
    <model>/vae/                        diffusers AutoencoderKL folder (sd-vae-ft-mse)
    <model>/wav2vec/                    transformers Wav2Vec2 folder (wav2vec2-base-960h)
    <model>/chinese-wav2vec2-base/      JoyHallo's instead (TencentGameMate's folder; its pytorch_model.bin is read)

or EchoMimic's download as it comes (`pretrained_weights/`):

    <model>/denoising_unet.pth, reference_unet.pth, motion_module.pth, face_locator.pth
    <model>/denoising_unet_acc.pth, motion_module_acc.pth   (the accelerated weights)
    <model>/sd-vae-ft-mse/
    <model>/audio_processor/whisper_tiny.pt                 (openai-whisper's tiny.pt)

or MEMO's download as it comes (memoavatar/memo; the VAE and wav2vec2 are not part of it: put
sd-vae-ft-mse and wav2vec2-base-960h beside the folder, e.g. in models/emo/):

    <model>/reference_net/, diffusion_net/, image_proj/, audio_proj/   (config.json + safetensors each)
    <model>/misc/face_analysis/models/, misc/vocal_separator/Kim_Vocal_2.onnx

or V-Express's download as it comes (tk93/V-Express; its VAE and wav2vec2-base-960h beside the folder, as for
MEMO):

    <model>/reference_net.bin, denoising_unet.bin, motion_module.bin, v_kps_guider.bin, audio_projection.bin

The VAE and audio encoder are looked for beside the network file first, then in the
`shared` folders given (ComfyUI's models/emo/), then one level up (models/emo/<name>/net.pth
finds models/emo/vae/), so several networks can share them. Each may also be a single
.safetensors file (see `vae.load_vae`, `AudioEncoder.from_pretrained`, `WhisperAudioEncoder`).
"""

from __future__ import annotations

from pathlib import Path

from ..config import EMOConfig
from .loading import PICKLE_SUFFIXES, is_echomimic_entry, memo_folder, vexpress_folder

NET_NAMES = ("net.safetensors", "net.pth")
VAE_NAMES = ("vae", "sd-vae-ft-mse", "vae.safetensors", "sd-vae-ft-mse.safetensors",
             "vae-ft-mse-840000-ema-pruned.safetensors")
WAV2VEC_NAMES = ("wav2vec", "wav2vec2-base-960h", "wav2vec/wav2vec2-base-960h", "wav2vec2-base-960h.safetensors",
                 "wav2vec.safetensors")
# JoyHallo's Mandarin wav2vec2: TencentGameMate/chinese-wav2vec2-base as its README clones it (a folder; our
# download puts it there too), as other packs keep it (models/wav2vec/TencentGameMate/..., models/transformers/
# TencentGameMate/...), or the single file ComfyUI's models/audio_encoders holds for core's audio encoder loader
# (Kijai's wav2vec2-chinese-base_fp16.safetensors).
CHINESE_WAV2VEC_NAMES = ("chinese-wav2vec2-base", "wav2vec/chinese-wav2vec2-base", "TencentGameMate/chinese-wav2vec2-base",
                         "chinese-wav2vec2-base.safetensors", "wav2vec2-chinese-base_fp16.safetensors",
                         "wav2vec2-chinese-base.safetensors")
WAV2VEC_MODELS = {"wav2vec2-base-960h": WAV2VEC_NAMES, "chinese-wav2vec2-base": CHINESE_WAV2VEC_NAMES}
WHISPER_NAMES = ("audio_processor/whisper_tiny.pt", "whisper_tiny.pt", "whisper/tiny.pt", "tiny.pt",
                 "whisper_tiny.safetensors", "audio_processor/whisper_tiny.safetensors")


def find_net(model: Path) -> Path:
    """The network: a file, or a folder holding net.* (or EchoMimic's files or MEMO's folders: the folder stands
    for them)."""
    memo = memo_folder(model)
    if memo is not None:
        return memo
    if model.is_dir() and vexpress_folder(model) is not None:
        return model
    if model.is_file():
        return model
    if not model.is_dir():
        raise FileNotFoundError(f"Model not found: {model} (give a model folder or its network file).")
    if is_echomimic_entry(model):
        return model
    for name in NET_NAMES:
        if (model / name).is_file():
            return model / name
    candidates = [p for p in model.iterdir() if p.suffix == ".safetensors" or p.suffix in PICKLE_SUFFIXES]
    if len(candidates) == 1:
        return candidates[0]
    raise FileNotFoundError(
        f"No network file in {model}: put Hallo's or Hallo2's net.pth (or our net.safetensors) there, "
        "EchoMimic's denoising_unet.pth, reference_unet.pth, motion_module.pth and face_locator.pth, or MEMO's "
        "reference_net/, diffusion_net/, image_proj/ and audio_proj/ folders."
    )


def _find_part(roots: list[Path], names: tuple[str, ...], what: str,
               form: str = "a folder with config.json and its weights") -> Path:
    """A model part: a folder with config.json, or a single file (.safetensors; .pt for whisper)."""
    for root in roots:
        for name in names:
            candidate = root / name
            if (candidate / "config.json").is_file() or (candidate.suffix in (".safetensors", ".pt")
                                                          and candidate.is_file()):
                return candidate
    where = " or ".join(str(r / names[0]) for r in roots)
    raise FileNotFoundError(
        f"No {what} found: put it in {where} ({form}), or as {names[-2]}."
    )


def search_roots(net_path: Path, shared: tuple[Path, ...] = ()) -> list[Path]:
    """Where a network's VAE and audio encoder are looked for: beside it, the shared folders, one level up."""
    home = net_path if net_path.is_dir() else net_path.parent
    roots: list[Path] = []
    for root in (home, *map(Path, shared), home.parent):
        if root not in roots:
            roots.append(root)
    return roots


def vae_path(net_path: Path, shared: tuple[Path, ...] = ()) -> Path:
    """The VAE the loader takes for the network at `net_path` (see search_roots)."""
    return _find_part(search_roots(net_path, shared), VAE_NAMES, "VAE (sd-vae-ft-mse)")


def audio_encoder_path(net_path: Path, config: EMOConfig, shared: tuple[Path, ...] = ()) -> Path:
    """The audio encoder of the network's family: whisper tiny.pt (EchoMimic), wav2vec2-base-960h, or
    chinese-wav2vec2-base (JoyHallo)."""
    roots = search_roots(net_path, shared)
    if config.spec.audio_encoder == "whisper":
        return _find_part(roots, WHISPER_NAMES, "whisper tiny.pt (EchoMimic's audio_processor/whisper_tiny.pt)",
                          "the file from EchoMimic's download")
    model = config.spec.wav2vec_model
    return _find_part(roots, WAV2VEC_MODELS[model], f"wav2vec2 model ({model})")
