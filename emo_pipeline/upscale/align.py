"""Faces aligned to CodeFormer's 512² template from five landmarks, and the restored faces warped back.

Points are in pixels with pixel centres at integer coordinates (OpenCV's convention, which Hallo2's
warps use). A matrix [2, 3] maps a frame's pixels to the aligned face's.

Where this differs from Hallo2 (facelib's FaceRestoreHelper):
* landmarks come from our detector (SCRFD, the same five points as Hallo2's RetinaFace: eyes, nose tip,
  mouth corners), or, with the built-in cascade (a box only), are placed in the box where the template
  puts them, which aligns the face's position and size but not its tilt;
* the similarity is a least-squares fit over the five points (Umeyama), where Hallo2 uses
  cv2.estimateAffinePartial2D with LMEDS (the best of random point pairs); on five clean points they
  agree closely, and the fit does not change from run to run;
* frames whose face is not found keep the previous frame's alignment (Hallo2 would stop).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

# facexlib's five-point template for FFHQ-aligned 512² faces (left eye, right eye, nose, mouth corners),
# the one Hallo2's FaceRestoreHelper uses.
FACE_TEMPLATE_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                              [201.26117, 371.41043], [313.08905, 371.15118]])
# Where a detector's face box (forehead to chin, cheek to cheek) falls in that template: eyes at 40 % of
# its height, mouth at 76 %, 2.3 inter-eye distances wide.
TEMPLATE_FACE_BOX = (111.0, 94.0, 401.0, 458.0)
# Hallo2 fills what lies outside the frame with this grey (BGR 135, 133, 132).
BORDER_GREY = (132 / 255, 133 / 255, 135 / 255)


def template(size: int = 512) -> np.ndarray:
    return FACE_TEMPLATE_512 * (size / 512)


def landmarks_from_box(box: tuple[float, float, float, float]) -> np.ndarray:
    """The five points where the template puts them, for a face box [x0, y0, x1, y1]."""
    tx0, ty0, tx1, ty1 = TEMPLATE_FACE_BOX
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / (tx1 - tx0), (y1 - y0) / (ty1 - ty0)
    return np.stack([(FACE_TEMPLATE_512[:, 0] - tx0) * sx + x0, (FACE_TEMPLATE_512[:, 1] - ty0) * sy + y0], 1)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rotation, uniform scale and shift [2, 3] that maps the points `src` [K, 2] closest to `dst`
    (least squares): x' = a·x - b·y + tx, y' = b·x + a·y + ty."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity needs matching [K, 2] point sets with K >= 2, got {src.shape} and {dst.shape}.")
    x, y = src[:, 0], src[:, 1]
    one, zero = np.ones_like(x), np.zeros_like(x)
    rows = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, np.concatenate([dst[:, 0], dst[:, 1]]), rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def _sample(image: torch.Tensor, points: torch.Tensor, fill: tuple[float, ...] | None) -> torch.Tensor:
    """image [N, C, H, W] read at pixel coordinates points [N, h, w, 2] (bilinear); outside it, `fill`
    (None: zeros)."""
    h, w = image.shape[-2:]
    grid = torch.stack([(2 * points[..., 0] + 1) / w - 1, (2 * points[..., 1] + 1) / h - 1], -1)
    out = F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    if fill is None:
        return out
    inside = F.grid_sample(torch.ones_like(image[:, :1]), grid.to(image.dtype), mode="bilinear",
                           padding_mode="zeros", align_corners=False)
    grey = torch.tensor(fill, dtype=image.dtype, device=image.device)[None, :, None, None]
    return out + (1 - inside) * grey


def _pixel_grid(h: int, w: int, device, dtype=torch.float64) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype), torch.arange(w, device=device, dtype=dtype),
                            indexing="ij")
    return torch.stack([xs, ys], -1)  # [h, w, 2]: x, y


def _apply(matrices: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """matrices [N, 2, 3] applied to points [h, w, 2] → [N, h, w, 2]."""
    return torch.einsum("nij,hwj->nhwi", matrices[:, :, :2], points) + matrices[:, None, None, :, 2]


def warp_faces(frames: torch.Tensor, matrices: np.ndarray, size: int = 512) -> torch.Tensor:
    """frames [N, 3, H, W] → aligned faces [N, 3, size, size]; each matrix maps its frame's pixels to the face's."""
    inverse = torch.from_numpy(np.stack([invert(m) for m in matrices])).to(frames.device)
    points = _apply(inverse, _pixel_grid(size, size, frames.device))
    return _sample(frames, points, BORDER_GREY)


def face_weight(points: torch.Tensor, size: int, feather: float) -> torch.Tensor:
    """The paste-back mask at face-pixel coordinates points [..., 2]: 1 inside the aligned square, ramping
    to 0 over `feather` pixels towards its edges (our feathered mask, in place of Hallo2's face parsing)."""
    x, y = points[..., 0], points[..., 1]
    edge = torch.minimum(torch.minimum(x + 0.5, size - 0.5 - x), torch.minimum(y + 0.5, size - 0.5 - y))
    return (edge / max(feather, 1e-6)).clamp(0, 1)


def paste_faces(background: torch.Tensor, faces: torch.Tensor, matrices: np.ndarray, scale: float,
                feather: float | None = None) -> torch.Tensor:
    """Restored faces [N, 3, S, S] warped back into the upscaled frames background [N, 3, H·scale, W·scale]
    (matrices map the original frames' pixels to the faces'), blended in by the feathered mask
    (default band: a tenth of the face's side, about Hallo2's soft edge)."""
    size = faces.shape[-1]
    feather = size / 10 if feather is None else feather
    hs, ws = background.shape[-2:]
    out_pixels = _pixel_grid(hs, ws, background.device)
    original = (out_pixels + 0.5) / scale - 0.5  # an upscaled pixel's centre in the original frame
    points = _apply(torch.from_numpy(np.stack(matrices)).to(background.device), original)
    face = _sample(faces, points, None)
    weight = face_weight(points, size, feather)[:, None].to(background.dtype)
    return background + (face - background) * weight
