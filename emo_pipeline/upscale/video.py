"""The high-resolution stage on a face video: each frame's face aligned to 512², restored by Hallo2's
temporal CodeFormer in overlapping chunks of 16 frames, and pasted back into the frame upscaled ×1-4
(RealESRGAN ×2 for the background, as Hallo2's `--bg_upsampler realesrgan`; bicubic without it).

Frames stream through (`FaceUpscaler.stream`): one chunk is held at a time, so memory does not grow
with the video's length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .align import landmarks_from_box, paste_faces, similarity, template, warp_faces
from .chunks import CHUNK, OVERLAP, check_chunking, blend_chunks
from .codeformer import HALLO2_SR, CodeFormerConfig, TemporalCodeFormer
from .loading import CODEFORMER_FILE, FETCH_HINT, REALESRGAN_FILE, find_file, load_codeformer, load_realesrgan
from .rrdbnet import REALESRGAN_X2PLUS, RRDBConfig, RRDBNet, upscale_tiled

log = logging.getLogger(__name__)

Landmarks = Callable[[np.ndarray], "np.ndarray | None"]  # RGB uint8 frame → five points [5, 2], or None


@dataclass(frozen=True)
class UpscaleSettings:
    scale: int = 2  # output side / input side, 1 to 4 (Hallo2's -s)
    fidelity: float = 0.5  # CodeFormer's w: 0 trusts the codebook (sharper), 1 the input (closer); Hallo2's default
    chunk: int = CHUNK
    overlap: int = OVERLAP
    blend: str = "linear"  # overlap frames cross-faded, or "hallo2": the earlier chunk's kept
    background: str = "auto"  # "realesrgan", "bicubic", or "auto": RealESRGAN when its file was loaded
    frames_at_once: int = 4  # CodeFormer's encoder/decoder batch (the transformer sees the whole chunk)
    tile: int = 400  # RealESRGAN tile (Hallo2's --bg_tile) and its 40-pixel margin
    feather: float | None = None  # paste-back band in face pixels (default: a tenth of the face's side)

    def check(self) -> None:
        if self.scale not in (1, 2, 3, 4):
            raise ValueError(f"upscale must be 1, 2, 3 or 4 (Hallo2's factors), not {self.scale}.")
        if not 0.0 <= self.fidelity <= 1.0:
            raise ValueError(f"fidelity must be from 0 (the codebook's detail) to 1 (the input's), not {self.fidelity}.")
        if self.background not in ("auto", "realesrgan", "bicubic"):
            raise ValueError(f"background must be auto, realesrgan or bicubic, not {self.background!r}.")
        check_chunking(self.chunk, self.overlap, self.blend)
        if self.frames_at_once < 1 or self.tile < 16:
            raise ValueError("frames_at_once must be at least 1 and tile at least 16 pixels.")


def detector_landmarks(analyzer) -> Landmarks:
    """Our face detector's five points for the largest face; with the built-in cascade (a box only), the
    template's points placed in its box."""
    def find(frame: np.ndarray) -> np.ndarray | None:
        if analyzer.detector is not None:
            boxes, _, points = analyzer.detector.detect(frame)
            if len(boxes):
                areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
                return np.asarray(points[int(np.argmax(areas))], np.float64)
            return None
        faces = analyzer.faces(frame)
        return landmarks_from_box(faces[0].box) if faces else None

    return find


def centred_landmarks(height: int, width: int, face_fraction: float = 0.6) -> np.ndarray:
    """The template's points for a face centred in the frame taking `face_fraction` of its short side (our
    face crops' framing), for frames where no face is ever found."""
    side = min(height, width) * face_fraction
    cx, cy = width / 2, height / 2
    return landmarks_from_box((cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))


class FaceUpscaler:
    def __init__(self, codeformer: TemporalCodeFormer, background: RRDBNet | None = None,
                 landmarks: Landmarks | None = None, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        self.device, self.dtype = torch.device(device), dtype
        self.codeformer = codeformer.to(self.device, dtype).eval()
        self.background = background.to(self.device, dtype).eval() if background is not None else None
        self.landmarks = landmarks
        self.face_size = codeformer.config.img_size

    @classmethod
    def from_folders(cls, folders: list[str | Path], landmarks: Landmarks | None = None, device="cpu",
                     dtype: torch.dtype = torch.float32, codeformer_config: CodeFormerConfig = HALLO2_SR,
                     rrdb_config: RRDBConfig = REALESRGAN_X2PLUS, need_background: bool = False) -> "FaceUpscaler":
        """hallo2/net_g.pth and (if there) realesrgan/RealESRGAN_x2plus.pth from the first folder holding them."""
        folders = [Path(f) for f in folders]
        net_g = find_file(folders, CODEFORMER_FILE)
        where = ", ".join(str(f) for f in folders) or "(no folder given)"
        if net_g is None:
            raise FileNotFoundError(f"No {CODEFORMER_FILE} (Hallo2's high-resolution network) in {where}. "
                                    f"Fetch it with {FETCH_HINT}.")
        bg = find_file(folders, REALESRGAN_FILE)
        if bg is None and need_background:
            raise FileNotFoundError(f"background 'realesrgan' needs {REALESRGAN_FILE}, not found in {where}. "
                                    f"Fetch it with {FETCH_HINT}, or choose background 'bicubic'.")
        return cls(load_codeformer(net_g, codeformer_config), load_realesrgan(bg, rrdb_config) if bg else None,
                   landmarks, device, dtype)

    # --- per frame -------------------------------------------------------------------------------
    def _matrix(self, frame: torch.Tensor, previous: np.ndarray | None) -> np.ndarray | None:
        if self.landmarks is None:
            return None
        points = self.landmarks((frame.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
        if points is None:
            return previous
        return similarity(points, template(self.face_size))

    def _background(self, frame: torch.Tensor, scale: int, mode: str) -> torch.Tensor:
        """frame [1, 3, H, W] → [1, 3, H·scale, W·scale]."""
        if scale == 1:
            return frame
        h, w = frame.shape[-2:]
        if mode == "realesrgan" or (mode == "auto" and self.background is not None):
            if self.background is None:
                raise FileNotFoundError(f"background 'realesrgan' needs {REALESRGAN_FILE}: fetch it with "
                                        f"{FETCH_HINT}, or choose background 'bicubic'.")
            up = upscale_tiled(self.background, frame, self._tile)
            if up.shape[-1] == w * scale and up.shape[-2] == h * scale:
                return up
            frame = up
        return F.interpolate(frame, size=(h * scale, w * scale), mode="bicubic", align_corners=False,
                             antialias=True).clamp(0, 1)

    def _restore(self, faces: torch.Tensor) -> torch.Tensor:
        out = self.codeformer((faces * 2 - 1)[None], w=self._fidelity, adain_codes=True,
                              frames_at_once=self._frames_at_once)[0]
        return ((out + 1) / 2).clamp(0, 1)

    # --- the video -------------------------------------------------------------------------------
    def stream(self, frames: Iterable[torch.Tensor], settings: UpscaleSettings = UpscaleSettings(),
               on_frame: Callable[[int], None] | None = None) -> Iterator[torch.Tensor]:
        """Frames in batches [F, H, W, 3] (0..1, any batch sizes) → upscaled frames, one [H·s, W·s, 3] at a time.
        `on_frame(done)` is called after each output frame (a progress and cancel point)."""
        settings.check()
        if settings.background == "realesrgan" and self.background is None and settings.scale > 1:
            raise FileNotFoundError(f"background 'realesrgan' needs {REALESRGAN_FILE}: fetch it with {FETCH_HINT}, "
                                    "or choose background 'bicubic'.")
        self._fidelity, self._frames_at_once, self._tile = settings.fidelity, settings.frames_at_once, settings.tile
        state = {"matrix": None, "warned": False, "size": None}

        def aligned() -> Iterator[tuple[tuple[torch.Tensor, np.ndarray], torch.Tensor]]:
            for batch in frames:
                if batch.ndim != 4 or batch.shape[-1] < 3:
                    raise ValueError(f"The upscaler takes frames [F, H, W, 3]; got {tuple(batch.shape)}.")
                for frame in batch[..., :3]:
                    if state["size"] is None:
                        state["size"] = frame.shape[:2]
                    elif frame.shape[:2] != state["size"]:
                        raise ValueError(f"All frames must have one size; got {tuple(frame.shape[:2])} after "
                                         f"{tuple(state['size'])}.")
                    matrix = self._matrix(frame, state["matrix"])
                    if matrix is None:
                        if not state["warned"]:
                            log.warning("EMO upscale: no face found; aligning as a face centred in the frame (as EMO "
                                        "Face Crop frames it) until one is.")
                            state["warned"] = True
                        matrix = similarity(centred_landmarks(*frame.shape[:2]), template(self.face_size))
                    state["matrix"] = matrix
                    x = frame.permute(2, 0, 1)[None].to(self.device, self.dtype)
                    yield (x, matrix), warp_faces(x, [matrix], self.face_size)[0]

        done = 0
        for (x, matrix), face in blend_chunks(aligned(), self._restore, settings.chunk, settings.overlap,
                                              settings.blend):
            background = self._background(x, settings.scale, settings.background)
            out = paste_faces(background, face[None], [matrix], settings.scale, settings.feather)
            done += 1
            yield out[0].permute(1, 2, 0).clamp(0, 1).float().cpu()
            if on_frame is not None:
                on_frame(done)

    def upscale(self, frames: torch.Tensor, settings: UpscaleSettings = UpscaleSettings(),
                on_frame: Callable[[int], None] | None = None) -> torch.Tensor:
        """A whole IMAGE batch [F, H, W, 3] → [F, H·s, W·s, 3] (ComfyUI's node: input and output are held anyway)."""
        if frames.ndim != 4 or len(frames) == 0:
            raise ValueError(f"The upscaler takes a batch of frames [F, H, W, 3] with F >= 1; got {tuple(frames.shape)}.")
        h, w = frames.shape[1:3]
        out = torch.empty(len(frames), h * settings.scale, w * settings.scale, 3)
        for i, frame in enumerate(self.stream((frames[i: i + 8] for i in range(0, len(frames), 8)), settings, on_frame)):
            out[i] = frame
        return out


def upscale_face_video(frames: torch.Tensor, folders: list[str | Path], settings: UpscaleSettings = UpscaleSettings(),
                       analyzer=None, device="cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The engine's one call: frames [F, H, W, 3] in 0..1 → [F, H·s, W·s, 3], with the networks from
    `folders` (models/emo) and faces found by `analyzer` (a FaceAnalyzer; default: one on those folders)."""
    from ..face import FaceAnalyzer

    analyzer = analyzer or FaceAnalyzer(list(folders))
    upscaler = FaceUpscaler.from_folders(folders, detector_landmarks(analyzer), device, dtype,
                                         need_background=settings.background == "realesrgan" and settings.scale > 1)
    return upscaler.upscale(frames, settings)


def tiny_random_upscaler(landmarks: Landmarks | None = None, device="cpu", seed: int = 0) -> FaceUpscaler:
    """Tiny random-weight networks of the same structure (32² faces): a pipeline check, not a result."""
    from .codeformer import tiny_codeformer_config
    from .rrdbnet import tiny_rrdb_config

    torch.manual_seed(seed)
    return FaceUpscaler(TemporalCodeFormer(tiny_codeformer_config()), RRDBNet(tiny_rrdb_config()), landmarks, device)


def batched(frames: Iterable[torch.Tensor], size: int = 8) -> Iterator[torch.Tensor]:
    """Single frames [H, W, 3] → batches [≤size, H, W, 3] (what video writers and paste-back take)."""
    pending: list[torch.Tensor] = []
    for frame in frames:
        pending.append(frame)
        if len(pending) == size:
            yield torch.stack(pending)
            pending = []
    if pending:
        yield torch.stack(pending)
