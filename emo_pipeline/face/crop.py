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


def default_feather(side: int) -> int:
    """A blend band of 1/16 of the crop's side (32 px for a 512-px crop)."""
    return max(2, side // 16)


def edge_weights(box: CropBox, feather: int) -> torch.Tensor:
    """[side, side] weights of the generated square: 1 inside, ramping to 0 over `feather` pixels
    towards each crop edge that lies inside the photo (an edge on the photo's border has nothing
    to blend with and keeps full weight)."""
    d = torch.arange(box.side, dtype=torch.float32) + 0.5  # distance of pixel centres from the left/top edge
    ramp = lambda dist: (dist / feather).clamp(0, 1)  # noqa: E731
    ones = torch.ones(box.side)
    left = ramp(d) if box.x0 > 0 else ones
    right = ramp(d.flip(0)) if box.x0 + box.side < box.width else ones
    top = ramp(d) if box.y0 > 0 else ones
    bottom = ramp(d.flip(0)) if box.y0 + box.side < box.height else ones
    return torch.minimum(top, bottom)[:, None] * torch.minimum(left, right)[None, :]


def match_colour(frames: torch.Tensor, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Frames [F, S, S, 3] shifted and scaled per channel so that `reference` (one generated frame,
    [S, S, 3]) gets the mean and spread of `target` (the photo under the crop). One correction for
    every frame of a video, so it does not flicker."""
    r = reference.reshape(-1, 3).float()
    mean, std = r.mean(0), r.std(0).clamp(min=1e-3)
    t = target.reshape(-1, 3)
    return ((frames - mean) / std * t.std(0) + t.mean(0)).clamp(0, 1)


def paste_back(frames: torch.Tensor, original: torch.Tensor, box: CropBox, feather: int | None = None,
               colour_reference: torch.Tensor | None = None) -> torch.Tensor:
    """Frames [F, S, S, 3] (any S) resized to the crop and placed into copies of the original
    [H, W, 3]. Over a band of `feather` pixels (default: 1/16 of the side; 0: a hard edge) inside the
    crop's edges the frames blend into the photo, so no seam shows; pixels outside the crop keep the
    original's values exactly. With `colour_reference` (a generated frame, the video's first), the
    frames' colours are first matched to the photo's, the same way for every frame."""
    h, w = original.shape[:2]
    if (h, w) != (box.height, box.width):
        raise ValueError(f"The original image is {w}×{h} but the crop was made on a {box.width}×{box.height} image.")
    feather = default_feather(box.side) if feather is None else int(feather)
    if feather < 0:
        raise ValueError(f"feather must be 0 (a hard edge) or more pixels, not {feather}.")
    x = frames.permute(0, 3, 1, 2)
    if x.shape[-1] != box.side:
        x = F.interpolate(x, size=(box.side, box.side), mode="bilinear", antialias=True, align_corners=False)
    x = x.permute(0, 2, 3, 1).clamp(0, 1).float()
    under = crop_square(original[..., :3].float(), box)  # the photo under the crop (edges repeated past it)
    if colour_reference is not None:
        reference = colour_reference.permute(2, 0, 1)[None].float()
        if reference.shape[-1] != box.side:
            reference = F.interpolate(reference, size=(box.side, box.side), mode="bilinear", antialias=True,
                                      align_corners=False)
        x = match_colour(x, under, reference[0].permute(1, 2, 0))
    if feather > 0:
        weight = edge_weights(box, feather)[None, :, :, None]
        x = under + (x - under) * weight
    out = original[..., :3].expand(len(frames), -1, -1, -1).clone()
    sx0, sy0 = max(0, -box.x0), max(0, -box.y0)
    dx0, dy0 = max(0, box.x0), max(0, box.y0)
    dx1, dy1 = min(w, box.x0 + box.side), min(h, box.y0 + box.side)
    out[:, dy0:dy1, dx0:dx1] = x[:, sy0: sy0 + dy1 - dy0, sx0: sx0 + dx1 - dx0].to(out.dtype)
    return out
