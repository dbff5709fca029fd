"""From a photo to what the portrait conditions need: a square face-centred crop, the face and
lip boxes inside it, and the identity embedding."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..portrait import as_rgb
from .analysis import FaceAnalyzer
from .crop import CropBox, crop_square, square_crop_box

Box = tuple[float, float, float, float]

log = logging.getLogger(__name__)  # "emo_pipeline.face...": hosts can route it; not the root logger


@dataclass
class FaceCrop:
    image: torch.Tensor  # [side, side, 3] in 0..1, the square crop
    box: CropBox  # where the crop sits in the original photo
    face_box: Box | None  # fractions of the crop; None: no face found (the whole image is used)
    lip_box: Box | None
    identity: torch.Tensor | None  # [512] ArcFace embedding, None without the ONNX model
    faces_found: int


def _to_crop(box: Box, crop: CropBox) -> Box:
    x0, y0, x1, y1 = box
    s = crop.side
    return tuple(min(max(v, 0.0), 1.0) for v in ((x0 - crop.x0) / s, (y0 - crop.y0) / s,
                                                  (x1 - crop.x0) / s, (y1 - crop.y0) / s))


def crop_to_face(photo: torch.Tensor, analyzer: FaceAnalyzer, face_index: int = 0, face_fraction: float = 0.6,
                 crop: bool = True, region_given: bool = False) -> FaceCrop:
    """Find the faces (largest first), pick one, and crop the square around it.

    No face: the centred square of the photo, the whole of it as the face region and no identity,
    which is what Hallo does, with a warning unless `region_given` (a face mask sets the region; the
    analysis is only for the identity). `crop=False` keeps the whole (square) photo and only analyses it.
    """
    rgb = as_rgb(photo)
    h, w = rgb.shape[:2]
    pixels = (rgb * 255).round().to(torch.uint8).numpy()
    faces = analyzer.faces(pixels)
    if faces and face_index >= len(faces):
        raise ValueError(f"face_index {face_index} asks for face {face_index + 1}, but {len(faces)} face(s) were "
                         "found (0 is the largest).")
    if not faces:
        if not region_given:
            log.warning("EMO: no face found in the portrait; using the whole image as the face region.")
        side = min(h, w)
        box = CropBox((w - side) // 2, (h - side) // 2, side, w, h) if crop else CropBox(0, 0, max(h, w), w, h)
        return FaceCrop(crop_square(rgb, box), box, None, None, None, 0)
    face = faces[face_index]
    box = square_crop_box(face.box, w, h, face_fraction) if crop else CropBox(0, 0, max(h, w), w, h)
    lip = face.lip_box()
    identity = torch.from_numpy(np.asarray(face.embedding, dtype=np.float32)) if face.embedding is not None else None
    return FaceCrop(crop_square(rgb, box), box, _to_crop(face.box, box), _to_crop(lip, box) if lip else None,
                    identity, len(faces))
