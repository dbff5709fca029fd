"""EMO ReferenceNet Encode: the portrait and its face region, as the ReferenceNet and face locator take them."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from ..emo_pipeline.face.reference import crop_to_face
from .downloads import target_folder
from .face import face_analyzer
from .notify import relays_warnings


class EMOReferenceNetEncode:
    DESCRIPTION = ("Prepares the portrait: square crop at the model's size, face region (from the mask, or the "
                   "whole image), identity embedding. Square, face-centred portraits work best.")
    CATEGORY = "EMO"
    FUNCTION = "encode"
    RETURN_TYPES = ("EMO_REFERENCE", "IMAGE")
    RETURN_NAMES = ("reference", "portrait")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"model": ("EMO_MODEL", {"tooltip": "From Load EMO Model."}),
                         "image": ("IMAGE", {"tooltip": "The portrait: square and face-centred works best (EMO Face "
                                                        "Crop's portrait)."})},
            "optional": {
                "face": ("EMO_FACE", {"tooltip": "From EMO Face Crop: face box, lips and identity of this portrait."}),
                "face_mask": ("MASK", {"tooltip": "White where the face is; overrides detection."}),
            },
        }

    @relays_warnings
    def encode(self, model, image: torch.Tensor, face=None, face_mask: torch.Tensor | None = None):
        if image.ndim == 4 and image.shape[0] > 1:
            raise ValueError(f"EMO ReferenceNet Encode got a batch of {image.shape[0]} images; it takes one "
                             "portrait. Pick one image (for example with an image-from-batch node).")
        image = image[0] if image.ndim == 4 else image
        if face is not None and tuple(face.image.shape[:2]) != tuple(image.shape[:2]):
            raise ValueError("The 'face' input describes another image: connect EMO Face Crop's portrait output "
                             "as this node's image.")
        mask = self._face_mask(face_mask, image.shape[0], image.shape[1])
        uses_identity = model.pipeline.config.uses_identity_embedding
        if uses_identity:
            face_analyzer().notice_missing_identity(target_folder())
        if face is None and (mask is None or uses_identity):  # analyse the portrait as it is (no crop)
            face = crop_to_face(image, face_analyzer(), crop=False, region_given=mask is not None)
        kwargs = {"face_mask": mask} if mask is not None else {"face_box": face.face_box, "lip_box": face.lip_box}
        identity = face.identity if uses_identity else None  # another model's identity has another size
        portrait = model.pipeline.prepare_portrait(image, identity=identity, **kwargs)
        return (portrait, portrait.image[None])

    @staticmethod
    def _face_mask(mask: torch.Tensor | None, height: int, width: int) -> torch.Tensor | None:
        if mask is None:
            return None
        while mask.ndim > 2 and mask.shape[0] == 1:  # [1, H, W] (ComfyUI's MASK) or [1, 1, H, W]
            mask = mask[0]
        if mask.ndim != 2:
            raise ValueError(f"EMO ReferenceNet Encode's face_mask must be one mask [H, W] (or [1, H, W]); got shape "
                             f"{tuple(mask.shape)}. Pick one mask of the batch first.")
        if not (mask > 0.5).any():
            # LoadImage gives an empty 64×64 mask for images without alpha: treat it as "no mask".
            warnings.warn("The face mask is empty; using the whole image as the face region.", stacklevel=2)
            return None
        if tuple(mask.shape) != (height, width):
            warnings.warn(f"The face mask is {mask.shape[1]}×{mask.shape[0]}, the image {width}×{height}; resizing the "
                          "mask.", stacklevel=2)
            mask = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest")[0, 0]
        return mask
