"""SCRFD face detector (insightface's scrfd_10g_bnkps.onnx) run with onnxruntime: boxes, scores
and five landmarks (eyes, nose, mouth corners). Pre- and post-processing follow insightface."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """RGB uint8 [H, W, 3] → [size, size, 3] float, resized to fit and padded at the right/bottom."""
    h, w = image.shape[:2]
    if h / w > 1:
        new_h, new_w = size, int(size * w / h)
    else:
        new_w, new_h = size, int(size * h / w)
    scale = new_h / h
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)[0].permute(1, 2, 0)
    canvas = np.zeros((size, size, 3), np.float32)
    canvas[:new_h, :new_w] = x.round().clamp(0, 255).numpy()
    return canvas, scale


def anchor_centers(size: int, stride: int) -> np.ndarray:
    """(x, y) of every anchor, two per grid cell, row by row: [cells * 2, 2]."""
    n = size // stride
    ys, xs = np.mgrid[:n, :n]
    centers = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centers, ANCHORS_PER_CELL, axis=0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy non-maximum suppression (insightface's, with its +1 pixel areas)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        overlap = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[1:][overlap <= threshold]
    return keep


class SCRFD:
    def __init__(self, session, size: int = 640, score_threshold: float = 0.5, nms_threshold: float = 0.4) -> None:
        self.session, self.size = session, size
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.input_name = session.get_inputs()[0].name

    def detect(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RGB uint8 image → boxes [N, 4] (x0, y0, x1, y1), scores [N], landmarks [N, 5, 2], best first."""
        canvas, scale = letterbox(image, self.size)
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
        outputs = self.session.run(None, {self.input_name: blob})
        n = len(STRIDES)
        boxes, scores, kps = [], [], []
        for i, stride in enumerate(STRIDES):
            score = outputs[i].reshape(-1)
            distance = outputs[i + n].reshape(-1, 4) * stride
            points = outputs[i + 2 * n].reshape(-1, 10) * stride
            centers = anchor_centers(self.size, stride)
            keep = score >= self.score_threshold
            c = centers[keep]
            boxes.append(np.concatenate([c - distance[keep, :2], c + distance[keep, 2:]], axis=1))
            kps.append((points[keep].reshape(-1, 5, 2) + c[:, None, :]))
            scores.append(score[keep])
        boxes = np.concatenate(boxes) / scale
        kps = np.concatenate(kps) / scale
        scores = np.concatenate(scores)
        keep = nms(boxes, scores, self.nms_threshold)
        return boxes[keep], scores[keep], kps[keep]
