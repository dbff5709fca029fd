"""ArcFace identity embedding (insightface's glintr100.onnx) with its 112×112 five-point alignment."""

from __future__ import annotations

import numpy as np
from skimage.transform import SimilarityTransform, warp

# Where insightface's ArcFace models expect the eyes, nose tip and mouth corners in a 112×112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Similarity-warp an RGB uint8 image so the five landmarks land on the ArcFace template."""
    src, dst = landmarks.astype(np.float64), ARCFACE_TEMPLATE * size / 112
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26; least squares (Umeyama)
        tform = SimilarityTransform.from_estimate(src, dst)
    else:
        tform = SimilarityTransform()
        tform.estimate(src, dst)
    warped = warp(image.astype(np.float64), tform.inverse, output_shape=(size, size), order=1, mode="constant",
                  cval=0.0, preserve_range=True)
    return np.clip(np.round(warped), 0, 255).astype(np.float32)  # insightface warps uint8 images


class ArcFace:
    def __init__(self, session, mean: float = 127.5, std: float = 127.5) -> None:
        self.session, self.mean, self.std = session, mean, std
        self.input_name = session.get_inputs()[0].name

    def embed(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The raw (not normalised) 512-d embedding Hallo feeds its identity projection."""
        aligned = align_face(image, landmarks)
        blob = ((aligned - self.mean) / self.std).transpose(2, 0, 1)[None].astype(np.float32)
        return self.session.run(None, {self.input_name: blob})[0].reshape(-1)
