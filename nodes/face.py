"""EMO Face Crop and EMO Paste Back: a square, face-centred portrait from any photo, and the
generated frames put back into the photo."""

from __future__ import annotations

import os

import torch

import folder_paths

from ..emo_pipeline.face import FaceAnalyzer, paste_back
from ..emo_pipeline.face.reference import crop_to_face
from .model_loader import FOLDER, memo_downloads
from .notify import relays_warnings

# Paste back's blend band, as a share of the crop's side (1/16: 32 px of a 512-px crop, as the engine's default)
DEFAULT_FEATHER = 0.0625
FEATHER = ("FLOAT", {"default": DEFAULT_FEATHER, "min": 0.0, "max": 0.5, "step": 0.0025,
                     "tooltip": "Paste back: the band over which the animated square blends into the photo, as a "
                                "share of the crop's side (0.0625: 1/16, 32 px of a 512-px crop); 0: a hard edge."})


def feather_pixels(share: float, side: int) -> int:
    """The blend band in whole pixels for a crop of `side` pixels (rounded down, as the engine's 1/16)."""
    if not 0.0 <= share <= 0.5:
        raise ValueError(f"EMO paste back: feather is a share of the crop's side from 0 to 0.5, not {share}.")
    return int(share * side)


_analyzers: dict[tuple[str, ...], FaceAnalyzer] = {}


def face_analyzer() -> FaceAnalyzer:
    """One analyzer per set of model folders (ONNX sessions are reused between runs): models/emo first, then a
    MEMO download in it (its misc/face_analysis/models/), then ComfyUI's models/insightface (where identity
    packs keep antelopev2)."""
    insightface = folder_paths.get_folder_paths("insightface") if "insightface" in folder_paths.folder_names_and_paths \
        else [os.path.join(folder_paths.models_dir, "insightface")]
    downloads = [str(folder) for folder in memo_downloads() if (folder / "misc" / "face_analysis").is_dir()]
    folders = tuple(folder_paths.get_folder_paths(FOLDER)) + tuple(downloads) + tuple(insightface)
    if folders not in _analyzers:
        _analyzers[folders] = FaceAnalyzer(list(folders))
    return _analyzers[folders]


class EMOFaceCrop:
    DESCRIPTION = ("Finds the face (largest first) and crops the square around it with the face at the size "
                   "the model expects. Uses insightface's SCRFD/ArcFace ONNX files from models/emo when present "
                   "(also giving the identity embedding), else a built-in detector.")
    CATEGORY = "EMO"
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "EMO_FACE", "MASK")
    RETURN_NAMES = ("portrait", "face", "face_mask")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "One photo with a face."}),
                "face_fraction": ("FLOAT", {"default": 0.6, "min": 0.3, "max": 0.9, "step": 0.01,
                                            "tooltip": "Share of the crop the face takes (Hallo asks for 0.5-0.7; EchoMimic crops at 0.5)."}),
                "face_index": ("INT", {"default": 0, "min": 0, "max": 16,
                                       "tooltip": "Which face, by size: 0 = the largest, 1 = the next, ..."}),
            }
        }

    @relays_warnings
    def crop(self, image: torch.Tensor, face_fraction: float, face_index: int):
        if image.ndim == 4 and image.shape[0] > 1:
            raise ValueError(f"EMO Face Crop got a batch of {image.shape[0]} images; it takes one photo.")
        face = crop_to_face(image, face_analyzer(), face_index=face_index, face_fraction=face_fraction)
        side = face.box.side
        mask = torch.zeros(1, side, side)
        if face.face_box is not None:
            x0, y0, x1, y1 = (round(v * side) for v in face.face_box)
            mask[:, y0:y1, x0:x1] = 1.0
        else:
            mask[:] = 1.0
        return (face.image[None], face, mask)


class EMOPasteBack:
    DESCRIPTION = ("Puts generated frames back into the original photo at the face crop, blended into it over a "
                   "band at the crop's edge; the rest stays as it was.")
    CATEGORY = "EMO"
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"frames": ("IMAGE", {"tooltip": "The generated frames (of the face crop)."}),
                         "original": ("IMAGE", {"tooltip": "The whole photo given to EMO Face Crop."}),
                         "face": ("EMO_FACE", {"tooltip": "From EMO Face Crop: where the frames go."})},
            "optional": {
                "feather": FEATHER,
                "colour_match": ("BOOLEAN", {"default": False,
                                             "tooltip": "Match the animated square's colours to the photo's."}),
            },
        }

    @relays_warnings
    def paste(self, frames: torch.Tensor, original: torch.Tensor, face, feather: float = DEFAULT_FEATHER,
              colour_match: bool = False):
        photo = original[0] if original.ndim == 4 else original
        out = torch.empty(len(frames), photo.shape[0], photo.shape[1], 3)
        reference = frames[0] if colour_match and len(frames) else None
        for start in range(0, len(frames), 32):  # a chunk at a time: long videos stay within memory
            out[start: start + 32] = paste_back(frames[start: start + 32], photo[..., :3], face.box,
                                                feather_pixels(feather, face.box.side), reference)
        return (out,)
