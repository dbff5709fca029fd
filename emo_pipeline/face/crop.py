"""Square, face-centred crops of a portrait, and pasting generated frames back into the original."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropBox:
    """A square in the original image's pixels; it may reach past the edges (padded there)."""

    x0: int
    y0: int
    side: int
    width: int  # the original image's size
    height: int

    def to_dict(self) -> dict:
        return {"x0": self.x0, "y0": self.y0, "side": self.side, "width": self.width, "height": self.height}


def square_crop_box(face_box: tuple[float, float, float, float], width: int, height: int,
                    face_fraction: float = 0.6) -> CropBox:
    """The square centred on the face in which the face's larger side takes `face_fraction`
    (Hallo asks for 50-70 %). It stays inside the image when it fits; otherwise it is padded."""
    if not 0.1 <= face_fraction <= 1.0:
        raise ValueError(f"face_fraction must be between 0.1 and 1, got {face_fraction}")
    x0, y0, x1, y1 = face_box
    side = round(max(x1 - x0, y1 - y0) / face_fraction)
    side = max(side, 8)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    # Slide the square back inside the image where it can be, keeping the face in view.
    if side <= width:
        left = min(max(left, 0), width - side)
    if side <= height:
        top = min(max(top, 0), height - side)
    return CropBox(left, top, side, width, height)


def crop_square(image: torch.Tensor, box: CropBox) -> torch.Tensor:
    """[H, W, C] → [side, side, C]; parts outside the image repeat its edge pixels."""
    h, w = image.shape[:2]
    pad = (max(0, -box.x0), max(0, box.x0 + box.side - w), max(0, -box.y0), max(0, box.y0 + box.side - h))
    x = image.permute(2, 0, 1)[None]
    if any(pad):
        x = F.pad(x, pad, mode="replicate")
    x0, y0 = box.x0 + pad[0], box.y0 + pad[2]
    return x[0, :, y0: y0 + box.side, x0: x0 + box.side].permute(1, 2, 0)


def paste_back(frames: torch.Tensor, original: torch.Tensor, box: CropBox) -> torch.Tensor:
    """Frames [F, S, S, 3] (any S) resized to the crop and placed into copies of the original
    [H, W, 3]; pixels outside the crop keep the original's values exactly."""
    h, w = original.shape[:2]
    if (h, w) != (box.height, box.width):
        raise ValueError(f"The original image is {w}×{h} but the crop was made on a {box.width}×{box.height} image.")
    x = frames.permute(0, 3, 1, 2)
    if x.shape[-1] != box.side:
        x = F.interpolate(x, size=(box.side, box.side), mode="bilinear", antialias=True, align_corners=False)
    x = x.permute(0, 2, 3, 1).clamp(0, 1)
    out = original[..., :3].expand(len(frames), -1, -1, -1).clone()
    sx0, sy0 = max(0, -box.x0), max(0, -box.y0)
    dx0, dy0 = max(0, box.x0), max(0, box.y0)
    dx1, dy1 = min(w, box.x0 + box.side), min(h, box.y0 + box.side)
    out[:, dy0:dy1, dx0:dx1] = x[:, sy0: sy0 + dy1 - dy0, sx0: sx0 + dx1 - dx0].to(out.dtype)
    return out
