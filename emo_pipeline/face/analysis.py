"""FaceAnalyzer: the faces in a portrait, largest first, with box, five landmarks and identity.

With insightface's ONNX models (found in Hallo's download: face_analysis/models/scrfd_10g_bnkps.onnx
and glintr100.onnx) it detects with SCRFD and embeds with ArcFace, as Hallo does. Without them it
falls back to the LBP frontal-face cascade that ships inside scikit-image: a box only, no landmarks,
and a zero identity embedding (Hallo's own no-face behaviour). Callers whose model uses the identity
embedding say so in one line (`notice_missing_identity`); for the others nothing is lost.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.advice import where
from ..onnx_runtime import onnx_session

SCRFD_FILE = "scrfd_10g_bnkps.onnx"
ARCFACE_FILE = "glintr100.onnx"
# Hallo's download keeps them in face_analysis/models/; identity packs (InstantID, PuLID) keep
# insightface's antelopev2 set in models/insightface/models/antelopev2/ (the same two files), and
# buffalo_l's detector (det_10g.onnx) is the same SCRFD network. buffalo_l's ArcFace (w600k_r50) is
# another embedding than Hallo's glintr100, so it is not used.
# Hallo's and EchoMimic's layouts, insightface's packs, and MEMO's misc/face_analysis/models
SEARCH_SUBDIRS = (".", "face_analysis/models", "face_analysis", "models", "models/antelopev2", "antelopev2",
                  "models/buffalo_l", "buffalo_l", "misc/face_analysis/models")
SCRFD_FILES = (SCRFD_FILE, "det_10g.onnx")

log = logging.getLogger(__name__)  # "emo_pipeline.face...": hosts can route it; not the root logger


def face_models_notice(folder: str | Path) -> str:
    """The one line for a model that uses the identity embedding when no ArcFace model is found (in ComfyUI, the
    model's own download entry: every family that uses the embedding brings the face models)."""
    return ("EMO: no face models, so no identity embedding (weaker likeness). Fix: " + where(
        "run your model's 'download: ...' entry in Load EMO Model (it fetches what is missing)",
        f"python -m emo_pipeline download face --to {folder}"))


@dataclass
class FaceInfo:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    score: float
    landmarks: np.ndarray | None = None  # [5, 2]: eyes, nose tip, mouth corners
    embedding: np.ndarray | None = None  # [512] ArcFace, raw

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)

    def lip_box(self) -> tuple[float, float, float, float] | None:
        """A box around the mouth from the mouth corners (None without landmarks)."""
        if self.landmarks is None:
            return None
        (lx, ly), (rx, ry) = self.landmarks[3], self.landmarks[4]
        half_w = (rx - lx) / 2
        cy = (ly + ry) / 2
        return (float(lx), float(cy - 0.45 * half_w), float(rx), float(cy + 0.45 * half_w))


def find_onnx(folders: list[Path], *names: str) -> Path | None:
    """The first of `names` found, folder by folder (in order), in the known sub-folders."""
    for folder in folders:
        for sub in SEARCH_SUBDIRS:
            for name in names:
                candidate = Path(folder) / sub / name
                if candidate.is_file():
                    return candidate
    return None


def _arcface_normalisation(path: Path) -> tuple[float, float]:
    """insightface's rule: models that subtract and scale in their own graph take raw pixels."""
    try:
        import onnx
    except ImportError:
        return 127.5, 127.5
    ops = [node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node[:8]]
    return (0.0, 1.0) if "Sub" in ops and "Mul" in ops else (127.5, 127.5)


class FaceAnalyzer:
    def __init__(self, folders: list[str | Path] = ()) -> None:
        folders = [Path(f) for f in folders]
        self.detector = self.embedder = None
        scrfd, arcface = find_onnx(folders, *SCRFD_FILES), find_onnx(folders, ARCFACE_FILE)
        self.runtime_missing = bool(scrfd or arcface) and importlib.util.find_spec("onnxruntime") is None
        if self.runtime_missing:
            log.warning("Found insightface's face models but onnxruntime is not installed, so the built-in "
                            "detector is used: pip install onnxruntime (or onnxruntime-gpu) to use them.")
            scrfd = arcface = None
        if scrfd is not None:
            from .scrfd import SCRFD

            self.detector = SCRFD(onnx_session(scrfd))
        if arcface is not None:
            from .arcface import ArcFace

            self.embedder = ArcFace(onnx_session(arcface), *_arcface_normalisation(arcface))
        self.warned = False

    @property
    def uses_onnx(self) -> bool:
        return self.detector is not None

    def notice_missing_identity(self, folder: str | Path) -> None:
        """Once per analyzer, for a caller whose model uses the identity embedding: the face models are
        missing (when they are there but onnxruntime is not, the warning above already said so)."""
        if self.embedder is None and not self.runtime_missing and not self.warned:
            log.warning(face_models_notice(folder))
            self.warned = True

    def faces(self, image: np.ndarray) -> list[FaceInfo]:
        """RGB uint8 [H, W, 3] → faces, largest first."""
        if self.detector is not None:
            boxes, scores, landmarks = self.detector.detect(image)
            faces = [FaceInfo(tuple(map(float, b)), float(s), k) for b, s, k in zip(boxes, scores, landmarks)]
        else:
            faces = cascade_faces(image)
        faces.sort(key=lambda f: f.area, reverse=True)
        if self.embedder is not None:
            for face in faces:
                if face.landmarks is not None:
                    face.embedding = self.embedder.embed(image, face.landmarks)
        return faces


def cascade_faces(image: np.ndarray, max_side: int = 640) -> list[FaceInfo]:
    """Frontal faces with scikit-image's bundled LBP cascade (boxes only). Large photos are searched
    at most `max_side` pixels wide, and the boxes scaled back."""
    from skimage.data import lbp_frontal_face_cascade_filename
    from skimage.feature import Cascade
    from skimage.transform import rescale

    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        image = (rescale(image, scale, channel_axis=-1, anti_aliasing=True, preserve_range=True)).astype(np.uint8)
    h, w = image.shape[:2]
    side = min(h, w)
    detector = Cascade(lbp_frontal_face_cascade_filename())
    found = detector.detect_multi_scale(img=image, scale_factor=1.15, step_ratio=1,
                                        min_size=(max(24, side // 12),) * 2, max_size=(side, side))
    faces = []
    for d in found:
        # The cascade frames brows to mouth; widen it by 1.25 (more below) to reach the chin and
        # forehead, the extent SCRFD and Hallo's face boxes have.
        cx, cy, size = d["c"] + d["width"] / 2, d["r"] + d["height"] * 0.55, max(d["width"], d["height"]) * 1.25
        box = (cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2)
        faces.append(FaceInfo(tuple(v / scale for v in box), 1.0))
    return _drop_skinless(image, faces, scale)


def skin_fraction(image: np.ndarray, box: tuple[float, float, float, float]) -> float:
    """Share of the box's pixels in the usual skin range of YCbCr (Cb 77-127, Cr 133-173)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    patch = image[max(y0, 0): min(y1, h), max(x0, 0): min(x1, w)].reshape(-1, 3).astype(np.float64)
    if len(patch) == 0:
        return 0.0
    r, g, b = patch.T
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return float(((cb >= 77) & (cb <= 127) & (cr >= 133) & (cr <= 173)).mean())


def _drop_skinless(image: np.ndarray, faces: list[FaceInfo], scale: float) -> list[FaceInfo]:
    """The cascade also fires on face-like patterns (a patch on a space suit in scikit-image's
    astronaut). In a colour photo whose largest detection is skin-toned, the other detections
    without skin are dropped; grey photos (no skin tone anywhere) and the largest face are kept."""
    if len(faces) < 2:
        return faces
    faces = sorted(faces, key=lambda f: f.area, reverse=True)
    scaled = lambda f: tuple(v * scale for v in f.box)  # noqa: E731  (boxes are in the searched image's pixels here)
    if skin_fraction(image, scaled(faces[0])) < 0.3:
        return faces
    return [faces[0]] + [f for f in faces[1:] if skin_fraction(image, scaled(f)) >= 0.1]
