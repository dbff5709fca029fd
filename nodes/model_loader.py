"""Load EMO Model: a network from models/emo/ with its VAE and audio encoder, resident under ComfyUI's
model management (evicted when other nodes need the memory, reloaded when sampling again)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

import comfy.model_management as mm
import folder_paths
from comfy.model_patcher import ModelPatcher

from ..emo_pipeline.components import load_pipeline
from ..emo_pipeline.download import FAMILIES
from ..emo_pipeline.io.loading import MEMO_WEIGHTS, PICKLE_SUFFIXES, PRECISIONS
from ..emo_pipeline.memory_plan import MemoryPlan, plan_for_network
from ..emo_pipeline.pipeline import EMOPipeline
from .downloads import BUNDLED, catalogue_file, choices, entry, fetch, requested, target_folder
from .notify import relays_warnings

FOLDER = "emo"
NO_MODELS = "(no models in models/emo)"
VAE_BESIDE = "(from models/emo)"
AUDIO_BESIDE = "(from models/emo)"
AUDIO_FOLDER = "audio_encoders"  # ComfyUI core's folder for audio encoders (wav2vec2, whisper)
HELP = ("Put Hallo's or Hallo2's net.pth (or our .safetensors network) in {folder}/<name>/, with the "
        "sd-vae-ft-mse VAE in {folder}/vae/ and wav2vec2-base-960h in {folder}/wav2vec/ (diffusers and "
        "transformers folders); or EchoMimic's download (its pretrained_weights folder) as {folder}/echomimic/; or "
        "MEMO's download (memoavatar/memo: reference_net/, diffusion_net/, image_proj/, audio_proj/, misc/) as "
        "{folder}/memo/. See the pack's docs/models.md, 'Model folder'.")
# Files of EchoMimic's (and EchoMimic v2's) download that are parts of a network, not networks to pick: the list
# shows its denoising_unet.pth and denoising_unet_acc.pth, each standing for its four files (and, for v2, the
# download's converted echomimic-v2[-acc].safetensors beside them).
ECHOMIMIC_PART_FILES = {"reference_unet.pth", "motion_module.pth", "motion_module_acc.pth", "face_locator.pth",
                        "pose_encoder.pth"}
# V-Express's download (v-express/): its denoising_unet.bin stands for its five files, as EchoMimic's does.
VEXPRESS_PART_FILES = {"reference_net.bin", "motion_module.bin", "v_kps_guider.bin", "audio_projection.bin"}
SUPPORT_FOLDERS = {"vae", "wav2vec", "sd-vae-ft-mse", "audio_processor", "sd-image-variations-diffusers",
                   "chinese-wav2vec2-base"}


# MEMO downloads that other packs keep in ComfyUI's models/checkpoints (e.g. checkpoints/memo/, as
# ComfyUI-IF_MemoAvatar does) are offered too, under this prefix.
CHECKPOINTS = "checkpoints"
IN_CHECKPOINTS = "[checkpoints] "
MEMO_PART_FOLDERS = {"reference_net", "image_proj", "audio_proj", "misc"}


def register_model_folder() -> Path:
    """models/emo, keeping paths that extra_model_paths.yaml already added, plus the pack's bundled models."""
    path = os.path.join(folder_paths.models_dir, FOLDER)
    folder_paths.add_model_folder_path(FOLDER, path)
    if BUNDLED.is_dir():
        folder_paths.add_model_folder_path(FOLDER, str(BUNDLED))
    extensions = folder_paths.folder_names_and_paths[FOLDER][1]
    extensions.update({".pth", ".safetensors", ".bin"})  # .bin: V-Express's files, as its hub repository names them
    os.makedirs(path, exist_ok=True)
    return Path(path)


def network_files() -> list[str]:
    """Network files under models/emo (VAE and audio encoder folders are not networks), and MEMO downloads in
    models/checkpoints."""
    return _emo_networks() + [IN_CHECKPOINTS + name for name in _memo_in_checkpoints()]


def _memo_in_checkpoints() -> list[str]:
    if CHECKPOINTS not in folder_paths.folder_names_and_paths:
        return []
    return [name for name in folder_paths.get_filename_list(CHECKPOINTS)
            if Path(name).parts[-2:] == ("diffusion_net", MEMO_WEIGHTS) and len(Path(name).parts) == 3]


def memo_downloads() -> list[Path]:
    """The MEMO download folders in models/emo and models/checkpoints (for their misc/ models)."""
    bases = folder_paths.get_folder_paths(FOLDER)
    if CHECKPOINTS in folder_paths.folder_names_and_paths:
        bases = bases + folder_paths.get_folder_paths(CHECKPOINTS)
    return [Path(base) / name for base in bases if os.path.isdir(base) for name in sorted(os.listdir(base))
            if (Path(base) / name / "diffusion_net").is_dir()]


def shared_roots() -> list[Path]:
    """Where the VAE and wav2vec2 are looked for after the network's own folder: models/emo, then where other
    audio-driven packs keep them as Hugging Face repo folders (models/vae/stabilityai/sd-vae-ft-mse/,
    models/wav2vec/facebook/wav2vec2-base-960h/, models/wav2vec/TencentGameMate/chinese-wav2vec2-base/), then
    ComfyUI core's models/audio_encoders (JoyHallo's wav2vec2-chinese-base_fp16.safetensors, as core's audio
    encoder loader reads it)."""
    roots = [Path(p) for p in folder_paths.get_folder_paths(FOLDER)]
    # not models/vae itself: a vae.safetensors there may be another model's VAE (pick it with vae_name)
    roots += [Path(base) / "stabilityai" for base in folder_paths.get_folder_paths("vae")]
    wav2vec = Path(folder_paths.models_dir) / "wav2vec"
    roots += [wav2vec / "facebook", wav2vec]
    if AUDIO_FOLDER in folder_paths.folder_names_and_paths:
        roots += [Path(p) for p in folder_paths.get_folder_paths(AUDIO_FOLDER)]
    return roots


def choice_path(checkpoint: str) -> str | None:
    """The file a choice names (in models/emo, or with the [checkpoints] prefix in models/checkpoints), checked
    to lie inside its model folder."""
    folder, name = (CHECKPOINTS, checkpoint[len(IN_CHECKPOINTS):]) if checkpoint.startswith(IN_CHECKPOINTS) \
        else (FOLDER, checkpoint)
    if folder not in folder_paths.folder_names_and_paths:
        return None
    path = folder_paths.get_full_path(folder, name)
    if path is not None and not any(inside_folder(path, base) for base in folder_paths.get_folder_paths(folder)):
        raise ValueError(f"EMO: {checkpoint!r} is outside the model folders.")
    return path


def _emo_networks() -> list[str]:
    names = []
    for name in folder_paths.get_filename_list(FOLDER):
        parts = Path(name).parts
        if parts[-2:] == ("diffusion_net", MEMO_WEIGHTS) and len(parts) <= 3:
            names.append(name)  # MEMO's download: its diffusion net stands for its four folders
            continue
        if parts[0] in SUPPORT_FOLDERS | MEMO_PART_FOLDERS or parts[0].startswith(".") or len(parts) > 2:
            continue  # hidden folders hold train-demo's work files, not finished networks
        if parts[-1] in ECHOMIMIC_PART_FILES | VEXPRESS_PART_FILES or parts[-1].startswith("whisper"):
            continue
        if Path(name).suffix in (".safetensors", *PICKLE_SUFFIXES):
            names.append(name)
    return sorted(names)


def inside_folder(path: str, folder: str) -> bool:
    """Whether `path` lies inside `folder` (core's get_full_path ensures it; checked here as well)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath((path, folder)) == folder


def audio_encoder_files() -> list[str]:
    """Files in ComfyUI's models/audio_encoders (the folder exists in core 0.3.5x and later)."""
    if AUDIO_FOLDER not in folder_paths.folder_names_and_paths:
        return []
    return [n for n in folder_paths.get_filename_list(AUDIO_FOLDER) if n.endswith((".safetensors", ".pt", ".pth"))]


class _Holder(torch.nn.Module):
    """ModelPatcher writes `.device` on the module it manages; diffusers and transformers models
    make that a read-only property, so each model goes to ComfyUI inside this plain container."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


class EMOModel:
    """What flows along EMO_MODEL wires: the engine plus ComfyUI patchers for its three models."""

    def __init__(self, pipeline: EMOPipeline, name: str, load_device: torch.device) -> None:
        self.pipeline, self.name, self.load_device = pipeline, name, load_device
        self.plan: MemoryPlan | None = None  # memory_mode auto's choice (its decode chunk bounds the sampler's)
        offload = pipeline.device
        parts = {"net": pipeline.net, "vae": pipeline.vae, "audio": pipeline.audio_encoder.model}
        self.patchers = {name: ModelPatcher(_Holder(m), load_device, offload) for name, m in parts.items()}
        if pipeline.low_vram:  # wav2vec runs on the CPU in low-VRAM mode
            cpu = torch.device("cpu")
            self.patchers["audio"] = ModelPatcher(_Holder(pipeline.audio_encoder.model), cpu, cpu)

    def load(self, *parts: str, memory_required: int = 0) -> EMOPipeline:
        """Bring the named parts (all when none) onto the device in one call, as ComfyUI advises."""
        patchers = [self.patchers[p] for p in (parts or self.patchers)]
        mm.load_models_gpu(patchers, memory_required=memory_required, force_full_load=True)
        self.pipeline.device = self.load_device
        return self.pipeline


def plan_memory_for(path: str, device: torch.device, dtype: torch.dtype | None) -> MemoryPlan:
    """memory_mode auto: the model's family sampling fitted into the free memory ComfyUI reports for the device."""
    return plan_for_network(path, device, int(mm.get_free_memory(device)), dtype)


class LoadEMOModel:
    DESCRIPTION = ("Loads an EMO-family model from models/emo: Hallo / Hallo2 net.pth, EchoMimic's files "
                   "(denoising_unet.pth, or denoising_unet_acc.pth for its 6-step weights), MEMO's folders "
                   "(memo/diffusion_net/diffusion_pytorch_model.safetensors), or an EMO .safetensors.")
    CATEGORY = "EMO"
    FUNCTION = "load"
    RETURN_TYPES = ("EMO_MODEL",)
    RETURN_NAMES = ("model",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "checkpoint": (network_files() + choices(FAMILIES) or [NO_MODELS], {"tooltip": "Network file in "
                               "models/emo/ (for EchoMimic, its denoising_unet[_acc].pth: the other three files are "
                               "read from beside it; for MEMO, diffusion_net's file: the other three folders are read "
                               "from beside it; MEMO downloads in models/checkpoints, as other MEMO packs keep them, "
                               "are listed as [checkpoints] ...). 'download: <family>' fetches that family's files "
                               "from the Hugging Face hub into models/emo when queued (once; progress on this node, "
                               "Cancel stops it and the next run resumes), then loads them."}),
                "precision": (["auto", "fp32", "fp16", "bf16"], {"default": "auto",
                              "tooltip": "auto: the model's own on a GPU (fp16 as Hallo and EchoMimic run, bf16 "
                                         "as MEMO runs), fp32 on the CPU."}),
                "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's main device."}),
            },
            "optional": {
                "vae_name": ([VAE_BESIDE] + folder_paths.get_filename_list("vae"), {"default": VAE_BESIDE,
                             "tooltip": "sd-vae-ft-mse: from models/emo (vae/), or a file in ComfyUI's models/vae."}),
                "memory_mode": (["auto", "normal", "low_vram"], {"default": "auto",
                                "tooltip": "auto: the fastest mode whose counted peak (with a margin) fits the free "
                                           "device memory: normal, low_vram, or low_vram with fp8 weights; the "
                                           "console says which and why. "
                                           "low_vram (8 GB cards): guided rows one after the other, the VAE decodes "
                                           "frame by frame, attention in pieces. Same frames, somewhat slower."}),
                "weight_storage": (["as loaded", "fp8_e4m3fn"], {"default": "as loaded",
                                   "tooltip": "fp8_e4m3fn keeps the network's weights in 8 bits (Hallo: ~2.4 GB "
                                              "instead of 4.9 GB), up-cast layer by layer; a small quality loss."}),
                "compile": ("BOOLEAN", {"default": False,
                            "tooltip": "torch.compile the denoiser: faster steps after a compile of some minutes on "
                                       "first use; falls back to normal running where no compiler works."}),
                "audio_encoder": ([AUDIO_BESIDE] + audio_encoder_files(), {"default": AUDIO_BESIDE,
                                  "tooltip": "wav2vec2-base (Hallo), chinese-wav2vec2-base (JoyHallo) or whisper tiny "
                                             "(EchoMimic): from models/emo, or a file in ComfyUI's models/audio_encoders "
                                             "(e.g. wav2vec2-base-960h.safetensors, or wav2vec2-chinese-base_fp16"
                                             ".safetensors as core's audio encoder loader reads it; JoyHallo finds "
                                             "that one there by itself)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, checkpoint: str):
        """Download entries are valid whether or not their files are there yet (a saved workflow keeps
        working after the download); a shipped workflow's missing file says how to get it."""
        if checkpoint == NO_MODELS or requested(checkpoint) is not None or checkpoint in network_files():
            return True
        known = catalogue_file(checkpoint)
        if known is not None:
            d, _ = known
            return (f"EMO: {checkpoint} is not in {target_folder()}. Pick '{entry(d.name)}' in Load EMO Model's "
                    f"list to fetch it (once), or run `python -m emo_pipeline download {d.name} --to "
                    f"{target_folder()}`.")
        return f"EMO: no network '{checkpoint}' in models/emo: pick one from Load EMO Model's list."

    @relays_warnings
    def load(self, checkpoint: str, precision: str, device: str, vae_name: str = VAE_BESIDE,
             memory_mode: str = "auto", weight_storage: str = "as loaded", compile: bool = False,
             audio_encoder: str = AUDIO_BESIDE):
        root = register_model_folder()
        wanted = requested(checkpoint)
        if wanted is not None:
            path = str(fetch(wanted))
        else:
            path = choice_path(checkpoint) if checkpoint != NO_MODELS else None
        if path is None:
            raise FileNotFoundError(f"No EMO network '{checkpoint}' in {root}. " + HELP.format(folder=root))
        load_device = torch.device("cpu") if device == "cpu" else mm.get_torch_device()
        dtype = None if precision == "auto" else PRECISIONS[precision]  # None: the family's own (load_pipeline)
        offload = torch.device("cpu") if load_device.type == "cpu" else mm.unet_offload_device()
        shared = shared_roots()
        low_vram, fp8_weights, plan = memory_mode == "low_vram", weight_storage == "fp8_e4m3fn", None
        if memory_mode == "auto":
            plan = plan_memory_for(path, load_device, dtype)
            low_vram, fp8_weights = plan.low_vram, fp8_weights or plan.fp8_weights
            logging.info("EMO: memory %s", plan.reason)
        try:
            vae = None if vae_name == VAE_BESIDE else folder_paths.get_full_path("vae", vae_name)
            audio = None if audio_encoder == AUDIO_BESIDE else folder_paths.get_full_path(AUDIO_FOLDER, audio_encoder)
            if audio_encoder != AUDIO_BESIDE and audio is None:
                raise FileNotFoundError(f"No audio encoder '{audio_encoder}' in ComfyUI's models/{AUDIO_FOLDER}.")
            pipeline = load_pipeline(path, device=offload, dtype=dtype, shared=tuple(shared), vae=vae, audio_encoder=audio,
                                     low_vram=low_vram, fp8_weights=fp8_weights,
                                     compile=compile, compute_device=load_device)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err} " + HELP.format(folder=root)) from None
        logging.info("EMO: loaded %s (%s, %s, %s%s)", checkpoint, pipeline.config.name,
                     str(pipeline.dtype).replace("torch.", ""),
                     "low_vram" if low_vram else "normal", ", fp8 weights" if fp8_weights else "")
        model = EMOModel(pipeline, checkpoint, load_device)
        model.plan = plan
        return (model,)
