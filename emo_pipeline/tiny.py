"""Tiny random-weight components: a whole pipeline that runs in seconds on a CPU.

Used by the tests and by `generate` when no model is given. Its output is noise-like: it
checks the machinery, not the quality. Zero-initialised layers (which make the audio, face
and temporal paths no-ops in a fresh model) are filled with small random values so that every
path changes the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers import AutoencoderKL
from transformers import Wav2Vec2Config, Wav2Vec2Model

from .audio.encoder import AudioEncoder
from .config import EMOConfig, tiny_config
from .io.safe_files import write_atomic
from .models import EMONet

if TYPE_CHECKING:
    from .audio.whisper import WhisperAudioEncoder


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Give every all-zero weight small random values (deterministic in `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    return module


def tiny_vae(seed: int = 0, downscale: int = 8) -> AutoencoderKL:
    """SD's VAE layout with few channels; one block per halving plus one (4 blocks for 8x)."""
    torch.manual_seed(seed)
    blocks = downscale.bit_length()
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
        block_out_channels=(8, 16, 16, 16)[:blocks], layers_per_block=1, norm_num_groups=4, sample_size=64,
    )


def tiny_wav2vec_config(hidden: int = 32, layers: int = 2) -> Wav2Vec2Config:
    # Same CNN strides as wav2vec2-base (320-sample hop at 16 kHz), far fewer channels.
    return Wav2Vec2Config(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=2 * hidden,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        feat_extract_norm="group", do_stable_layer_norm=False, vocab_size=32,
    )


def tiny_wav2vec(seed: int = 0, hidden: int = 32, layers: int = 2) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return Wav2Vec2Model(tiny_wav2vec_config(hidden, layers))


def tiny_whisper(seed: int = 0, dim: int = 16, layers: int = 2) -> "WhisperAudioEncoder":
    """A whisper encoder with whisper's input (80 mels, 30-s segments) and few channels: `layers`
    states of `dim` per 50 Hz step (the block input and layers - 1 blocks)."""
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from .audio.whisper import WhisperAudioEncoder, whisper_config

    torch.manual_seed(seed)
    dims = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=dim, n_audio_head=2, n_audio_layer=layers - 1)
    return WhisperAudioEncoder(WhisperEncoder(whisper_config(dims)), dims)


def tiny_audio_encoder(config: EMOConfig, seed: int = 0):
    """The audio front end of the config's family, tiny."""
    if config.spec.audio_encoder == "whisper":
        return tiny_whisper(seed, config.audio_feature_dim, config.audio_feature_layers)
    return AudioEncoder(tiny_wav2vec(seed, config.audio_feature_dim, config.audio_feature_layers))


def tiny_net(config: EMOConfig | None = None, seed: int = 0) -> EMONet:
    torch.manual_seed(seed)
    return randomize_(EMONet(config or tiny_config()), seed)


def tiny_components(config: EMOConfig | None = None, seed: int = 0) -> tuple[EMONet, AutoencoderKL, "AudioEncoder | WhisperAudioEncoder"]:
    config = config or tiny_config()
    return tiny_net(config, seed), tiny_vae(seed, config.vae_downscale), tiny_audio_encoder(config, seed)


def write_tiny_model_folder(root: str | Path, name: str = "tiny", config: EMOConfig | None = None,
                            seed: int = 0) -> Path:
    """A complete tiny model on disk in the documented layout: <root>/<name>/net.safetensors,
    <root>/vae/ and <root>/wav2vec/. Returns the network file."""
    from .io.loading import save_net

    root = Path(root)
    net, vae, encoder = tiny_components(config, seed)
    (root / name).mkdir(parents=True, exist_ok=True)
    path = save_net(net, root / name / "net.safetensors")
    vae.save_pretrained(root / "vae")
    _write_wav2vec(encoder, root / "wav2vec")
    return path


def write_tiny_echomimic_folder(root: str | Path, config: EMOConfig | None = None, seed: int = 0,
                                acc: bool = False) -> Path:
    """A tiny EchoMimic (or, with an EchoMimic v2 config, v2) download in its own layout: the four .pth files
    (split as EchoMimic ships them: motion modules in motion_module.pth, the rest of the denoising UNet in
    denoising_unet.pth; v2's pose_encoder.pth in place of face_locator.pth),
    sd-vae-ft-mse/ and audio_processor/whisper_tiny.pt in openai-whisper's format. Returns the folder."""
    from .audio.whisper import openai_name
    from .config import tiny_echomimic_config

    root = Path(root)
    config = config or tiny_echomimic_config()
    net, vae, whisper = tiny_components(config, seed)
    root.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    variant = "_acc" if acc else ""
    parts = {
        "reference_unet.pth": {k.removeprefix("reference_unet."): v for k, v in state.items()
                               if k.startswith("reference_unet.")},
        f"denoising_unet{variant}.pth": {k.removeprefix("denoising_unet."): v for k, v in state.items()
                                         if k.startswith("denoising_unet.") and ".motion_modules." not in k},
        f"motion_module{variant}.pth": {k.removeprefix("denoising_unet."): v for k, v in state.items()
                                        if k.startswith("denoising_unet.") and ".motion_modules." in k},
        # EchoMimic v2 ships its pose encoder (the face locator's body) as pose_encoder.pth
        "pose_encoder.pth" if config.spec.locator_input == "poses" else "face_locator.pth":
            {k.removeprefix("face_locator."): v for k, v in state.items() if k.startswith("face_locator.")},
    }
    for name, part in parts.items():
        _save(root / name, {k: v.clone() for k, v in part.items()})
    vae.save_pretrained(root / "sd-vae-ft-mse")
    (root / "audio_processor").mkdir(exist_ok=True)
    encoder = {openai_name(k): v.clone() for k, v in whisper.model.state_dict().items()}
    dims = dict(whisper.dims, n_vocab=8, n_text_ctx=4, n_text_state=whisper.dims["n_audio_state"], n_text_head=2,
                n_text_layer=1)
    _save(root / "audio_processor" / "whisper_tiny.pt", {"dims": dims, "model_state_dict": encoder})
    return root


def write_mask_separator(path: str | Path, gains: "np.ndarray", channel_order: tuple[int, ...] = (0, 1, 2, 3),
                         dim_t: int = 256) -> Path:
    """An ONNX model with Kim_Vocal_2's input and output ([batch, 4, F, dim_t] float32, F = len of gains'
    bins): the output is the input times `gains` ([4, F], per channel and bin), channels then taken in
    `channel_order`. With 0/1 gains over the bins of a voice it is an ideal vocal mask."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    gains = np.asarray(gains, dtype=np.float32)
    bins = gains.shape[1]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "gains"], ["scaled"]),
         helper.make_node("Gather", ["scaled", "order"], ["output"], axis=1)],
        "mask_separator",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4, bins, dim_t])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 4, bins, dim_t])],
        [numpy_helper.from_array(gains[None, :, :, None], "gains"),
         numpy_helper.from_array(np.asarray(channel_order, dtype=np.int64), "order")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_tiny_memo_folder(root: str | Path, config: EMOConfig | None = None, seed: int = 0,
                           use_inflated_groupnorm: bool | None = False) -> Path:
    """A tiny MEMO download in its own layout: <root>/memo/{reference_net,diffusion_net,image_proj,audio_proj}/
    with diffusion_pytorch_model.safetensors and config.json each (diffusion_net's says use_inflated_groupnorm,
    or leaves it out when None), and vae/ and wav2vec/ beside it in <root>. Returns the MEMO folder."""
    import json

    from .config import tiny_memo_config
    from .io.loading import MEMO_PARTS, MEMO_WEIGHTS, write_safetensors

    root = Path(root)
    config = config or tiny_memo_config()
    net, vae, encoder = tiny_components(config, seed)
    folder = root / "memo"
    state = net.state_dict()
    classes = {"reference_net": "UNet2DConditionModel", "diffusion_net": "UNet3DConditionModel",
               "image_proj": "ImageProjModel", "audio_proj": "AudioProjModel"}
    for prefix, name in MEMO_PARTS:
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        (folder / name).mkdir(parents=True, exist_ok=True)
        write_safetensors(folder / name / MEMO_WEIGHTS, {k: (v.shape, v.dtype) for k, v in part.items()},
                          part.__getitem__, {"format": "pt"})
        settings = {"_class_name": classes[name], "_diffusers_version": "0.31.0"}
        if name == "diffusion_net" and use_inflated_groupnorm is not None:
            settings["use_inflated_groupnorm"] = use_inflated_groupnorm
        write_atomic(folder / name / "config.json", json.dumps(settings).encode())
    vae.save_pretrained(root / "vae")
    _write_wav2vec(encoder, root / "wav2vec")
    return folder


def write_tiny_vexpress_folder(root: str | Path, config: EMOConfig | None = None, seed: int = 0) -> Path:
    """A tiny V-Express download in its own layout: <root>/v-express/ with its five .bin files, split as
    tk93/V-Express ships them (denoising_unet.bin holds the whole denoising UNet, its motion modules too, and
    motion_module.bin those again; here denoising_unet.bin's copies are zeros, so a loader that does not take
    motion_module.bin's, as V-Express's inference.py does, shows it; reference_net.bin carries its unused conv_out),
    and the VAE and wav2vec2 beside it in <root>/vae/ and <root>/wav2vec/. Returns the v-express folder."""
    from .config import tiny_vexpress_config

    root = Path(root)
    config = config or tiny_vexpress_config()
    net, vae, encoder = tiny_components(config, seed)
    state = net.state_dict()
    folder = root / "v-express"
    folder.mkdir(parents=True, exist_ok=True)

    def part(prefix: str) -> dict:
        return {k.removeprefix(prefix): v.clone() for k, v in state.items() if k.startswith(prefix)}

    reference = part("reference_unet.")
    channels = config.block_out_channels[0]
    generator = torch.Generator().manual_seed(seed)
    reference["conv_out.weight"] = torch.randn(config.latent_channels, channels, 3, 3, generator=generator)
    reference["conv_out.bias"] = torch.randn(config.latent_channels, generator=generator)
    denoising = part("denoising_unet.")
    motion = {k: v for k, v in denoising.items() if ".motion_modules." in k}
    files = {
        "reference_net.bin": reference,
        "denoising_unet.bin": {k: torch.zeros_like(v) if k in motion else v for k, v in denoising.items()},
        "motion_module.bin": motion,
        "v_kps_guider.bin": part("face_locator."),
        "audio_projection.bin": part("audioproj."),
    }
    for name, tensors in files.items():
        _save(folder / name, tensors)
    vae.save_pretrained(root / "vae")
    _write_wav2vec(encoder, root / "wav2vec")
    return folder


def _save(path: Path, value: dict) -> None:
    """A torch pickle written as every file of the pack is (io/safe_files.py)."""
    write_atomic(path, write=lambda f: torch.save(value, f))


def _write_wav2vec(encoder: AudioEncoder, folder: Path) -> None:
    """wav2vec2 as a transformers folder, with the preprocessor settings Hallo's download carries."""
    encoder.model.save_pretrained(folder)
    write_atomic(folder / "preprocessor_config.json",
                 b'{"do_normalize": true, "feature_size": 1, "padding_value": 0.0, "sampling_rate": 16000}')
