"""The reference portrait and its face conditions: pixels, face-region mask, identity embedding,
and the background/face/lip masks that Hallo's audio attention weighs its branches with.

Face detection itself lives elsewhere; here a face box (or a mask) is turned into the tensors
the model wants, with Hallo's recipe: boxes rasterised at image size, resized to 1/8 (64×64 for
512²), Gaussian-blurred (face kernel 51, lip kernel 31), min-max normalised; background =
1 − face, face = face − lip; then resized to each latent level.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .io.advice import where
from .models.audio_attention import RegionMasks

MIN_IMAGE_SIDE = 64
DEMO_MODEL = "demo"  # the bundled demo model's config name


def demo_photo_warning() -> str:
    """The demo model given a photograph: what to fetch for photographs, ComfyUI's way first inside ComfyUI."""
    return ("This portrait looks like a photograph, but the bundled demo model animates drawn faces only: the video "
            "will not look like this person. For photographs fetch real weights: " + where(
                "in Load EMO Model's checkpoint list pick 'download: hallo' and press Run (it fetches them into "
                "models/emo once, then loads them)",
                "`python -m emo_pipeline download hallo`, then --model hallo",
                "run `python -m emo_pipeline download hallo` and pick hallo/net.pth") + ".")


def looks_like_photograph(image: torch.Tensor) -> bool:
    """Whether an image [H, W, C] in 0..1 has a photograph's texture rather than the flat colour areas of the
    demo's drawn faces: on a 128² area-downsample in 8 bits, under 30 % of vertically neighbouring pixels are
    exactly equal (the drawn faces: 39-68 %; photographs, scikit-image's astronaut, coffee, camera: 1-20 %)."""
    x = image[..., :3].float().permute(2, 0, 1)[None]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = (F.interpolate(x, size=(128, 128), mode="area")[0] * 255).round()
    flat = ((x[:, 1:] - x[:, :-1]).abs().sum(0) == 0).float().mean().item()
    return flat < 0.3


@dataclass
class Portrait:
    pixels: torch.Tensor  # [3, S, S] in [-1, 1]
    face_region: torch.Tensor  # [3, S, S] in 0..1, the face locator's input
    identity: torch.Tensor  # [identity_dim]; zeros when no face embedding is known
    masks: list[RegionMasks]  # one per latent level, largest first
    face_box: tuple[float, float, float, float]  # x0, y0, x1, y1 in 0..1 of the square image

    def to(self, device: torch.device | str, dtype: torch.dtype) -> "Portrait":
        move = lambda t: t.to(device=device, dtype=dtype)  # noqa: E731
        return Portrait(
            move(self.pixels), move(self.face_region), move(self.identity),
            [RegionMasks(move(m.full), move(m.face), move(m.lip)) for m in self.masks], self.face_box,
        )

    @property
    def image(self) -> torch.Tensor:
        """The portrait as the model sees it, [S, S, 3] in 0..1."""
        return ((self.pixels.float() + 1) / 2).permute(1, 2, 0).cpu()


def _gaussian_blur(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """OpenCV's GaussianBlur with sigma 0 (sigma derived from the kernel size), reflect-101 borders."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = kernel // 2
    t = torch.arange(kernel, dtype=torch.float64) - r
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = (g / g.sum()).float()
    x = x[None, None]
    pad = min(r, x.shape[-1] - 1)
    g = g[r - pad: r + pad + 1]
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return x[0, 0]


def _box_mask(box: tuple[float, float, float, float], size: int) -> torch.Tensor:
    x0, y0, x1, y1 = (round(v * size) for v in box)
    mask = torch.zeros(size, size)
    mask[max(y0, 0): max(y1, 0), max(x0, 0): max(x1, 0)] = 1.0
    return mask


def _blurred(mask: torch.Tensor, size: int, kernel: int) -> torch.Tensor:
    small = F.interpolate(mask[None, None], size=(size, size), mode="area")[0, 0]
    blurred = _gaussian_blur(small, kernel)
    lo, hi = blurred.min(), blurred.max()
    return (blurred - lo) / (hi - lo) if hi > lo else blurred


def expand_box(box: tuple[float, float, float, float], ratio: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * ratio, (y1 - y0) * ratio
    return (max(cx - w / 2, 0.0), max(cy - h / 2, 0.0), min(cx + w / 2, 1.0), min(cy + h / 2, 1.0))


def lip_box_from_face(face_box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """The lips in a frontal face box (brow to chin), for when no landmarks are known. Tight, like
    a box around lip landmarks; region_masks widens it as Hallo does."""
    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    return (x0 + 0.35 * w, y0 + 0.72 * h, x0 + 0.65 * w, y0 + 0.84 * h)


def region_masks(face_box, lip_box, latent_size: int, levels: int = 4,
                 face_expand: float = 1.2, lip_expand: float = 2.0) -> list[RegionMasks]:
    size = latent_size
    face = _blurred(_box_mask(expand_box(face_box, face_expand), size * 8), size, 51)
    lip = _blurred(_box_mask(expand_box(lip_box, lip_expand), size * 8), size, 31)
    layers = {"full": 1 - face, "face": (face - lip).clamp(min=0), "lip": lip}
    out = []
    for level in range(levels):
        s = size >> level
        resized = {k: F.interpolate(v[None, None], size=(s, s), mode="bilinear", antialias=True,
                                    align_corners=False)[0, 0].flatten() for k, v in layers.items()}
        out.append(RegionMasks(**resized))
    return out


def as_rgb(image: torch.Tensor) -> torch.Tensor:
    """[H, W, C] or [1, H, W, C] float 0..1 with C = 1, 3 or 4 → [H, W, 3]; RGBA is composited on white."""
    if image.ndim == 4:
        if image.shape[0] != 1:
            raise ValueError(f"Expected one portrait, got a batch of {image.shape[0]} images; pick one first.")
        image = image[0]
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Portrait must be [H, W, 3] (or 1/4 channels), got shape {tuple(image.shape)}.")
    h, w, c = image.shape
    if min(h, w) < MIN_IMAGE_SIDE:
        raise ValueError(f"Portrait is {w}×{h} pixels; at least {MIN_IMAGE_SIDE} on each side is needed.")
    image = image.float()
    if c == 4:  # composite onto white, as a viewer would show it
        image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:])
    elif c == 1:
        image = image.expand(h, w, 3)
    return image.clamp(0, 1)


def to_rgb_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """[H, W, C] float 0..1 → [3, size, size]; non-square images are centre-cropped."""
    image = as_rgb(image)
    h, w = image.shape[:2]
    if h != w:
        warnings.warn(f"Portrait is {w}×{h}, not square: using its centred square crop. "
                      "Crop around the face first for best results.", stacklevel=3)
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        image = image[top: top + s, left: left + s]
    x = image.permute(2, 0, 1)[None]
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[0].clamp(0, 1)


def prepare_portrait(
    image: torch.Tensor,
    sample_size: int,
    identity_dim: int,
    latent_size: int,
    face_box: tuple[float, float, float, float] | None = None,
    face_mask: torch.Tensor | None = None,
    identity: torch.Tensor | None = None,
    lip_box: tuple[float, float, float, float] | None = None,
    face_expand: float = 1.2,
) -> Portrait:
    """Build the model's portrait conditions from an image [H, W, C] in 0..1.

    The face region comes from `face_mask` ([H, W], its bounding box is used), else `face_box`
    (fractions of the square image), else the whole image, as Hallo does when it finds no face.
    Without an identity embedding the zero vector is used, again as Hallo does.
    """
    rgb = to_rgb_square(image, sample_size)
    if face_mask is not None:
        face_box = _mask_box(face_mask, image)
    if face_box is None:
        face_box = (0.0, 0.0, 1.0, 1.0)
    lip_box = lip_box or lip_box_from_face(face_box)
    region = _box_mask(expand_box(face_box, face_expand), sample_size).expand(3, -1, -1).clone()
    if identity is None:
        identity = torch.zeros(identity_dim)
    identity = identity.float().flatten()
    if identity.numel() != identity_dim:
        raise ValueError(f"Identity embedding has {identity.numel()} values; this model expects {identity_dim}.")
    return Portrait(
        pixels=rgb * 2 - 1,
        face_region=region,
        identity=identity,
        masks=region_masks(face_box, lip_box, latent_size),
        face_box=face_box,
    )


def _mask_box(mask: torch.Tensor, image: torch.Tensor) -> tuple[float, float, float, float]:
    if mask.ndim == 3:
        mask = mask[0]
    h, w = image.shape[-3], image.shape[-2]
    if tuple(mask.shape) != (h, w):
        raise ValueError(f"Face mask is {tuple(mask.shape)[::-1]} but the image is {(w, h)}; they must match.")
    ys, xs = torch.nonzero(mask > 0.5, as_tuple=True)
    if len(ys) == 0:
        raise ValueError("Face mask is empty: mark the face region with values above 0.5.")
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    box = ((xs.min().item() - left) / s, (ys.min().item() - top) / s,
           (xs.max().item() + 1 - left) / s, (ys.max().item() + 1 - top) / s)
    return tuple(min(max(v, 0.0), 1.0) for v in box)
