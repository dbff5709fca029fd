"""EMO Upscale Face Video: Hallo2's high-resolution stage on any family's face frames (IMAGE → IMAGE),
before EMO Paste Back."""

from __future__ import annotations

from pathlib import Path

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.upscale.codeformer import HALLO2_SR
from ..emo_pipeline.upscale.loading import CODEFORMER_FILE, FETCH_HINT, REALESRGAN_FILE, find_file
from ..emo_pipeline.upscale.rrdbnet import REALESRGAN_X2PLUS
from ..emo_pipeline.upscale.video import FaceUpscaler, UpscaleSettings, detector_landmarks
from .face import face_analyzer
from .model_loader import FOLDER
from .notify import relays_warnings

# the network shapes the files are loaded into (tests put tiny ones here)
CODEFORMER_CONFIG, RRDB_CONFIG = HALLO2_SR, REALESRGAN_X2PLUS
_loaded: dict[tuple, FaceUpscaler] = {}  # one set of networks kept between runs (files and device unchanged)


def model_files() -> tuple[Path | None, Path | None]:
    """net_g.pth and RealESRGAN_x2plus.pth in models/emo (None for each that is not there)."""
    folders = [Path(f) for f in folder_paths.get_folder_paths(FOLDER)]
    return find_file(folders, CODEFORMER_FILE), find_file(folders, REALESRGAN_FILE)


def background_choices() -> list[str]:
    """'realesrgan' only while its file is there (auto uses it then, bicubic otherwise)."""
    return ["auto", *(["realesrgan"] if model_files()[1] is not None else []), "bicubic"]


def upscaler(device: torch.device) -> FaceUpscaler:
    folders = [Path(f) for f in folder_paths.get_folder_paths(FOLDER)]
    net_g, bg = model_files()
    if net_g is None:
        raise FileNotFoundError(f"EMO Upscale Face Video needs {CODEFORMER_FILE} (Hallo2's) in models/emo/: "
                                f"{FETCH_HINT}.")
    key = tuple((str(p), p.stat().st_mtime_ns) for p in (net_g, bg) if p) + (str(device), CODEFORMER_CONFIG, RRDB_CONFIG)
    if key not in _loaded:
        _loaded.clear()  # one copy of the networks at a time
        _loaded[key] = FaceUpscaler.from_folders(folders, detector_landmarks(face_analyzer()), device,
                                                 codeformer_config=CODEFORMER_CONFIG, rrdb_config=RRDB_CONFIG)
    return _loaded[key]


class EMOUpscaleFaceVideo:
    DESCRIPTION = ("Hallo2's high-resolution stage: each frame's face aligned to 512², restored by Hallo2's temporal "
                   "CodeFormer in chunks of 16 frames (overlap 4), and pasted into the frame upscaled x1-4, the rest "
                   f"by RealESRGAN x2 ({REALESRGAN_FILE}) or bicubic. Use it after any family's sampler and before "
                   f"EMO Paste Back. Needs {CODEFORMER_FILE}; its weights are under the S-Lab License 1.0: "
                   "non-commercial use only.")
    CATEGORY = "EMO"
    FUNCTION = "upscale"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames": ("IMAGE", {"tooltip": "The video's frames (an IMAGE batch, e.g. EMO Sampler's or VAE "
                                                "Decode's): each face is restored and the frame enlarged."}),
                "upscale": ("INT", {"default": 2, "min": 1, "max": 4,
                                    "tooltip": "Output size / input size (2: 512² to 1024², 4: 2048²)."}),
                "fidelity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05,
                                       "tooltip": "CodeFormer's w: 0 trusts its codebook (more detail), 1 the input "
                                                  "(closer to it). Hallo2's default: 0.5."}),
            },
            "optional": {
                "background": (background_choices(), {
                    "default": "auto", "tooltip": "The rest of the frame: RealESRGAN x2 (Hallo2's; listed when "
                                                  f"{REALESRGAN_FILE} is in models/emo), bicubic, or auto: "
                                                  "RealESRGAN when its file is there."}),
                "blend": (["linear", "hallo2"], {
                    "default": "linear", "tooltip": "The 4 frames neighbouring chunks share: cross-faded, or as "
                                                    "Hallo2 (the earlier chunk's kept)."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, background: str = "auto"):
        """Missing files are named before the graph runs, not after the sampler's hour."""
        net_g, bg = model_files()
        if net_g is None:
            return f"EMO Upscale Face Video needs {CODEFORMER_FILE} (Hallo2's) in models/emo/: {FETCH_HINT}."
        if background == "realesrgan" and bg is None:
            return (f"EMO Upscale Face Video: background 'realesrgan' needs {REALESRGAN_FILE} in models/emo/: "
                    f"{FETCH_HINT}; or choose auto or bicubic.")
        if background not in ("auto", "realesrgan", "bicubic"):
            return f"EMO Upscale Face Video: background must be auto, realesrgan or bicubic, not {background!r}."
        return True

    @relays_warnings
    def upscale(self, frames: torch.Tensor, upscale: int, fidelity: float, background: str = "auto",
                blend: str = "linear"):
        if frames.ndim != 4 or frames.shape[-1] < 3 or len(frames) == 0:
            raise ValueError(f"EMO Upscale Face Video needs IMAGE frames [F, H, W, 3] with F >= 1; got "
                             f"{tuple(frames.shape)}.")
        settings = UpscaleSettings(scale=upscale, fidelity=fidelity, background=background, blend=blend)
        settings.check()  # before loading anything
        net = upscaler(mm.get_torch_device())
        bar = comfy.utils.ProgressBar(len(frames))

        def step(done: int) -> None:
            bar.update_absolute(done, len(frames))
            mm.throw_exception_if_processing_interrupted()

        return (net.upscale(frames[..., :3].float(), settings, on_frame=step),)
