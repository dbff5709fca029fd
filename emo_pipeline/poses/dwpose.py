"""DWPose's whole-body keypoints on onnxruntime: how EchoMimic v2 reads the poses of a driving video.

Two ONNX models (hub yzd-v/DWPose, kept in models/emo/dwpose/): a YOLOX-L person detector on a 640x640
letterboxed frame, then an RTMPose whole-body estimator (133 keypoints, SimCC outputs) on each person's crop.
The steps, their thresholds and their number types follow the reference's numpy/OpenCV code as EchoMimic v2
ships it, without OpenCV: its bilinear resize and affine warp of 8-bit images are fixed-point, and are redone
here in integers with the same rounding, so both models see the same pixels (benchmarks/dwpose_side_by_side.py
measures every stage against the reference's own code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from einops import rearrange

from ..onnx_runtime import onnx_session
from .sequence import PoseError

DETECTOR_FILE = "yolox_l.onnx"
ESTIMATOR_FILE = "dw-ll_ucoco_384.onnx"
FOLDER = "dwpose"  # models/emo/dwpose/

DETECTOR_SIZE = 640  # the reference letterboxes every frame to 640x640, whatever the model says
STRIDES = (8, 16, 32)
DETECTOR_ROWS = sum((DETECTOR_SIZE // s) ** 2 for s in STRIDES)  # 8400 grid cells, one box each
DETECTOR_COLUMNS = 85  # centre x, y, log w, log h, objectness, 80 COCO classes (0: person)
PAD_VALUE = 114
CANDIDATE_SCORE, NMS_OVERLAP, PERSON_SCORE = 0.1, 0.45, 0.3
BOX_PADDING = 1.25
MEAN = np.array([123.675, 116.28, 103.53])  # applied to the channels in the order given (RGB frames)
STD = np.array([58.395, 57.12, 57.375])
SIMCC_SPLIT = 2.0  # SimCC bins per input pixel
KEYPOINTS = 133  # COCO-WholeBody: 17 body, 6 feet, 68 face, 21 left hand, 21 right hand
NECK_VISIBLE = 0.3
# After the neck is inserted at 17, OpenPose's position p holds MMPose's point OPENPOSE_ORDER[p].
OPENPOSE_ORDER = np.array([0, 17, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3, *range(18, KEYPOINTS + 1)])

_RESIZE_ONE = 2048  # OpenCV's INTER_RESIZE_COEF_SCALE: resize weights in 1/2048
_WARP_BITS, _TABLE_BITS = 10, 5  # OpenCV's AB_BITS and INTER_BITS: warp coordinates in 1/1024, taps in 1/32
_REMAP_BITS = 15  # INTER_REMAP_COEF_BITS: warp weights in 1/32768


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare by
class WholeBody:
    """Keypoints of every person found, in pixels of the image given, OpenPose's order as the reference's
    Wholebody returns it: 18 body (the neck computed), 6 feet, 68 face, 21 left hand, 21 right hand."""
    keypoints: np.ndarray  # float32 [people, 134, 2]
    scores: np.ndarray     # float32 [people, 134]


# ---------------------------------------------------------------------------- OpenCV's 8-bit resampling
def _resize_taps(source: int, target: int, factor: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First source index and float32 fraction of every target index, as OpenCV computes them."""
    # OpenCV inverts dsize/ssize (ssize/dsize can differ in the last bit), or the factor fx/fy when given
    scale = 1.0 / (target / source if factor is None else factor)
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position)
    return first.astype(np.int64), (position - first).astype(np.float32)


def _resize_weights(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    one = np.float32(_RESIZE_ONE)
    return (np.rint((np.float32(1) - fraction) * one).astype(np.int32), np.rint(fraction * one).astype(np.int32))


def resize_linear(image: np.ndarray, width: int, height: int,
                  factors: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 [H, W, C] → [height, width, C], bit for bit cv2.resize(..., INTER_LINEAR) of OpenCV 4.10.
    `factors`: the call's fx, fy when it gave those and dsize=(0, 0) (width, height being then OpenCV's
    round(W·fx), round(H·fy)): OpenCV then maps pixels by 1/fx, not by W/width."""
    h, w = image.shape[:2]  # (at exactly half size OpenCV takes its area path: the same 2x2 means as below)
    factor_x, factor_y = (None, None) if factors is None else factors
    x0, fx = _resize_taps(w, width, factor_x)
    fx[x0 < 0], x0[x0 < 0] = 0, 0  # columns clamp their position; rows below clamp only their indices
    fx[x0 >= w - 1], x0[x0 >= w - 1] = 0, w - 1
    ax0, ax1 = _resize_weights(fx)
    rows = image[:, x0].astype(np.int32) * ax0[:, None] \
        + image[:, np.minimum(x0 + 1, w - 1)].astype(np.int32) * ax1[:, None]  # int32: at most 255 * 2048
    y0, fy = _resize_taps(h, height, factor_y)
    by0, by1 = _resize_weights(fy)
    top, bottom = rows[np.clip(y0, 0, h - 1)] >> 4, rows[np.clip(y0 + 1, 0, h - 1)] >> 4
    out = (((by0[:, None, None] * top) >> 16) + ((by1[:, None, None] * bottom) >> 16) + 2) >> 2
    return out.astype(np.uint8)


def affine_from_points(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix taking three float32 points onto three others, solved as cv2.getAffineTransform does
    (a 6x6 system, OpenCV's LU with partial pivoting in float64), so its last bits agree; zeros if singular."""
    a, b = np.zeros((6, 6)), np.zeros(6)
    for i, ((x, y), (u, v)) in enumerate(zip(np.asarray(source, np.float64), np.asarray(target, np.float64))):
        a[2 * i, :3] = a[2 * i + 1, 3:] = (x, y, 1.0)
        b[2 * i], b[2 * i + 1] = u, v
    for i in range(6):
        pivot = i + int(np.argmax(np.abs(a[i:, i])))  # the first largest, as OpenCV's strict '>' picks it
        if abs(a[pivot, i]) < np.finfo(np.float64).eps * 100:
            return np.zeros((2, 3))
        a[[i, pivot], i:], b[[i, pivot]] = a[[pivot, i], i:], b[[pivot, i]]
        d = -1.0 / a[i, i]
        for j in range(i + 1, 6):
            alpha = a[j, i] * d
            a[j, i + 1:] += alpha * a[i, i + 1:]
            b[j] += alpha * b[i]
    for i in range(5, -1, -1):
        s = b[i]
        for k in range(i + 1, 6):  # one term at a time: the order of OpenCV's sum
            s -= a[i, k] * b[k]
        b[i] = s / a[i, i]
    return b.reshape(2, 3)


def warp_affine_linear(image: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [H, W, C] → [height, width, C] through the 2x3 matrix (source to target), bit for bit
    cv2.warpAffine(..., INTER_LINEAR) of OpenCV 4.10 with its zero border."""
    m = [float(v) for v in np.asarray(matrix, np.float64).ravel()]
    det = m[0] * m[4] - m[1] * m[3]  # inverted as OpenCV does, term by term
    det = 1.0 / det if det != 0 else 0.0
    m[0], m[4] = m[4] * det, m[0] * det
    m[1], m[3] = m[1] * -det, m[3] * -det
    m[2], m[5] = -m[0] * m[2] - m[1] * m[5], -m[3] * m[2] - m[4] * m[5]
    one, limit = float(1 << _WARP_BITS), np.iinfo(np.int32)
    xs, ys = np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64)
    half = 1 << (_WARP_BITS - _TABLE_BITS - 1)  # rounds to the nearest 1/32 pixel

    def fixed(values: np.ndarray) -> np.ndarray:  # OpenCV's saturate_cast<int>: rounded half to even
        return np.clip(np.rint(values * one), limit.min, limit.max).astype(np.int64)

    column_x, column_y = fixed(m[0] * xs), fixed(m[3] * xs)
    row_x, row_y = fixed(m[1] * ys + m[2]) + half, fixed(m[4] * ys + m[5]) + half
    x = (row_x[:, None] + column_x[None]) >> (_WARP_BITS - _TABLE_BITS)
    y = (row_y[:, None] + column_y[None]) >> (_WARP_BITS - _TABLE_BITS)
    sx, sy = np.clip(x >> _TABLE_BITS, -32768, 32767), np.clip(y >> _TABLE_BITS, -32768, 32767)  # shorts
    fx, fy = x & ((1 << _TABLE_BITS) - 1), y & ((1 << _TABLE_BITS) - 1)
    h, w, channels = image.shape
    pixels = image.reshape(h * w, channels)
    steps = 1 << _TABLE_BITS  # the weights of the 32x32 table are exact integers in 1/32768
    scale = (1 << _REMAP_BITS) // (steps * steps)
    total = np.zeros((height, width, channels), np.int32)  # at most 255 * 32768
    for row, col, weight in ((sy, sx, (steps - fx) * (steps - fy)), (sy, sx + 1, fx * (steps - fy)),
                             (sy + 1, sx, (steps - fx) * fy), (sy + 1, sx + 1, fx * fy)):
        inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)  # outside the frame: OpenCV's zero border
        index = np.clip(row, 0, h - 1) * w + np.clip(col, 0, w - 1)
        total += pixels.take(index, axis=0) * (weight * scale * inside).astype(np.int32)[..., None]
    return np.clip((total + (1 << (_REMAP_BITS - 1))) >> _REMAP_BITS, 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- the person detector
def letterbox(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The detector's input, float32 [1, 3, 640, 640]: the frame resized to fit (top left) over grey 114,
    channels in the order given (the reference feeds decord's RGB as is), 0-255; and the ratio applied."""
    h, w = image.shape[:2]
    ratio = min(DETECTOR_SIZE / h, DETECTOR_SIZE / w)
    new_w, new_h = int(w * ratio), int(h * ratio)
    if new_w == 0 or new_h == 0:
        raise PoseError(f"a {w}x{h} frame is too narrow to look for people in: it would be {new_w}x{new_h} "
                        f"pixels at the detector's {DETECTOR_SIZE}x{DETECTOR_SIZE}")
    canvas = np.full((DETECTOR_SIZE, DETECTOR_SIZE, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = resize_linear(image, new_w, new_h)
    return np.ascontiguousarray(rearrange(canvas, "h w c -> 1 c h w"), dtype=np.float32), ratio


def _grid() -> tuple[np.ndarray, np.ndarray]:
    """Every output row's cell (x, y) and stride, the strides' grids one after another, row by row."""
    cells, strides = [], []
    for stride in STRIDES:
        n = DETECTOR_SIZE // stride
        ys, xs = np.mgrid[:n, :n]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
        strides.append(np.full((n * n, 1), stride))
    return np.concatenate(cells).astype(np.float64), np.concatenate(strides).astype(np.float64)


def nms(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> list[int]:
    """Greedy non-maximum suppression with +1 pixel areas, in the boxes' own number type (float32 here)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= overlap]
    return keep


def person_boxes(output: np.ndarray, ratio: float) -> np.ndarray:
    """YOLOX's raw output [1, 8400, 85] → person boxes float64 [n, 4] (x0, y0, x1, y1 in the frame's pixels),
    best first: grid decoding, candidates over 0.1, NMS at 0.45 (class by class: only people are kept, so
    only theirs is run), then people over 0.3. float32 as the reference computes them."""
    rows = np.asarray(output, np.float32).reshape(-1, output.shape[-1])
    cells, strides = _grid()
    centre = ((rows[:, :2].astype(np.float64) + cells) * strides).astype(np.float32)
    size = (np.exp(rows[:, 2:4]).astype(np.float64) * strides).astype(np.float32)
    boxes = np.concatenate([centre - size / 2.0, centre + size / 2.0], axis=1)
    boxes /= ratio  # float32 divided by the float32 nearest the ratio, as numpy does in place
    scores = rows[:, 4] * rows[:, 5]  # objectness times the person class
    candidates = scores > CANDIDATE_SCORE
    boxes, scores = boxes[candidates], scores[candidates]
    keep = nms(boxes, scores, NMS_OVERLAP)
    people = scores[keep].astype(np.float64) > PERSON_SCORE  # compared in float64, as the reference does
    return boxes[keep][people].astype(np.float64).reshape(-1, 4)


# ---------------------------------------------------------------------------- the whole-body estimator
def crop_box(box: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """A box (x0, y0, x1, y1) → centre and size (float64 [2] each) of the crop the estimator sees: the box
    padded by 1.25 and widened or heightened to the estimator's aspect ratio."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    centre = np.array([x0 + x1, y0 + y1]) * 0.5
    w, h = np.array([x1 - x0, y1 - y0]) * BOX_PADDING
    aspect = width / height
    return centre, np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])


def crop_matrix(centre: np.ndarray, size: np.ndarray, width: int, height: int) -> np.ndarray:
    """The 2x3 matrix taking the crop (centre, size) onto the estimator's width x height, from three
    float32 point pairs as the reference builds them (centre, top middle, and the top middle turned)."""
    source, target = np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32)
    source[0] = centre
    source[1] = centre + np.array([0.0, size[0] * -0.5])
    target[0] = [width * 0.5, height * 0.5]
    target[1] = np.array([width * 0.5, height * 0.5]) + np.array([0.0, width * -0.5])
    for points in (source, target):  # the third: the first turned a quarter about the second, in float32
        direction = points[0] - points[1]
        points[2] = points[1] + np.array([-direction[1], direction[0]], np.float32)
    return affine_from_points(source, target)


def estimator_input(image: np.ndarray, box: np.ndarray, width: int, height: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One person's input, float32 [1, 3, height, width]: the crop warped, then (pixel - mean) / std in
    float64 per channel in the order given; with the crop's centre and size."""
    centre, size = crop_box(box, width, height)
    warped = warp_affine_linear(image, crop_matrix(centre, size, width, height), width, height)
    normalised = (warped - MEAN) / STD
    return np.ascontiguousarray(rearrange(normalised, "h w c -> 1 c h w"), dtype=np.float32), centre, size


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC outputs [K, 2W] and [K, 2H] → input-pixel positions float32 [K, 2] and scores float32 [K]: the
    first largest bin of each axis over the split ratio; the score the lower of the two peaks; a point whose
    score is not above 0 is put at bin -1 (-0.5 pixel), as the reference does."""
    locations = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=-1).astype(np.float32)
    peak_x, peak_y = simcc_x.max(axis=1), simcc_y.max(axis=1)
    scores = np.where(peak_x > peak_y, peak_y, peak_x).astype(np.float32)
    locations[scores <= 0.0] = -1
    return locations / np.float32(SIMCC_SPLIT), scores


def to_image(locations: np.ndarray, centre: np.ndarray, size: np.ndarray, width: int, height: int) -> np.ndarray:
    """Input-pixel positions [K, 2] back to the frame's pixels (float64)."""
    return locations / np.array([width, height]) * size + centre - size / 2


def to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MMPose's 133 points [P, 133, 2] and scores [P, 133] → OpenPose's 134: the neck inserted at 17 (midway
    between the shoulders, scored 1 when both shoulders score over 0.3, else 0), then the body reordered."""
    neck = (keypoints[:, 5] + keypoints[:, 6]) / 2
    neck_score = ((scores[:, 5] > NECK_VISIBLE) & (scores[:, 6] > NECK_VISIBLE)).astype(scores.dtype)
    keypoints = np.concatenate([keypoints[:, :17], neck[:, None], keypoints[:, 17:]], axis=1)
    scores = np.concatenate([scores[:, :17], neck_score[:, None], scores[:, 17:]], axis=1)
    return keypoints[:, OPENPOSE_ORDER], scores[:, OPENPOSE_ORDER]


# ---------------------------------------------------------------------------- model checks
def _dims(shape) -> list[int | None]:
    """onnxruntime's or onnx's dims: an int, or None where the dimension is named or free."""
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _fits(shape: list, expected: list) -> bool:
    return len(shape) == len(expected) and all(e is None or s is None or s == e for s, e in zip(shape, expected))


def detector_problem(inputs: list[list[int | None]], outputs: list[list[int | None]]) -> str | None:
    """What makes a graph's inputs and outputs (lists of dims) not DWPose's YOLOX detector; None if they fit."""
    size = DETECTOR_SIZE
    if len(inputs) == 1 and _fits(inputs[0], [1, 3, size, size]) and len(outputs) == 1 \
            and _fits(outputs[0], [1, DETECTOR_ROWS, DETECTOR_COLUMNS]):
        return None
    return (f"not DWPose's YOLOX person detector: inputs {inputs}, outputs {outputs} (expected one "
            f"[1, 3, {size}, {size}] input and one [1, {DETECTOR_ROWS}, {DETECTOR_COLUMNS}] output)")


def estimator_problem(inputs: list[list[int | None]], outputs: list[list[int | None]]) -> str | None:
    """What makes a graph's inputs and outputs not DWPose's RTMPose whole-body estimator; None if they fit."""
    expected = (f"expected one [1, 3, H, W] input of a fixed size and two outputs, simcc_x [1, {KEYPOINTS}, 2W] "
                f"and simcc_y [1, {KEYPOINTS}, 2H]")
    if len(inputs) != 1 or not _fits(inputs[0], [1, 3, None, None]) or None in inputs[0][2:]:
        return f"not DWPose's whole-body estimator: inputs {inputs}, outputs {outputs} ({expected})"
    height, width = inputs[0][2:]
    if len(outputs) != 2 or not _fits(outputs[0], [1, KEYPOINTS, 2 * width]) \
            or not _fits(outputs[1], [1, KEYPOINTS, 2 * height]):
        return f"not DWPose's whole-body estimator: inputs {inputs}, outputs {outputs} ({expected})"
    return None


def _session(path: Path, what: str, problem_of: Callable[[list, list], str | None]) -> object:
    """An onnxruntime session of the file, or a PoseError saying why the file is not the model it should be."""
    if not path.is_file():
        raise PoseError(f"{path} is missing: DWPose's {what} (hub yzd-v/DWPose) belongs in the models "
                        f"folder's emo/{FOLDER}/")
    try:
        session = onnx_session(path)
    except ImportError:
        raise
    except Exception as error:  # noqa: BLE001  (onnxruntime's InvalidProtobuf, Fail, ...: the file is the finding)
        raise PoseError(f"{path.name} is not a readable ONNX model ({type(error).__name__}): it should be "
                        f"DWPose's {what}; download it again") from None
    problem = problem_of([_dims(i.shape) for i in session.get_inputs()],
                         [_dims(o.shape) for o in session.get_outputs()])
    if problem:
        raise PoseError(f"{path.name} is {problem}")
    return session


def check_image(image: np.ndarray) -> np.ndarray:
    """The frame as the detector takes it (uint8 [H, W, 3]), or a PoseError saying what it is instead."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
        raise PoseError(f"DWPose takes an RGB frame as uint8 [height, width, 3], not {what}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise PoseError(f"DWPose was given an empty frame ({image.shape[1]}x{image.shape[0]})")
    return image


class DWPose:
    """DWPose's detector and estimator; called on an RGB frame, the keypoints of every person in it.

    whole_frame_if_none: when the detector finds nobody, the reference estimates one person on the whole
    frame (its box falls back to the frame); False returns no people instead."""

    def __init__(self, detector: str | Path, estimator: str | Path, *, whole_frame_if_none: bool = True) -> None:
        self.detector = _session(Path(detector), "YOLOX person detector", detector_problem)
        self.estimator = _session(Path(estimator), "whole-body estimator", estimator_problem)
        self.height, self.width = _dims(self.estimator.get_inputs()[0].shape)[2:]
        self.whole_frame_if_none = whole_frame_if_none

    def detect(self, image: np.ndarray) -> np.ndarray:
        """Person boxes float64 [n, 4] (x0, y0, x1, y1 in the frame's pixels), best first."""
        tensor, ratio = letterbox(check_image(image))
        (output,) = self.detector.run(None, {self.detector.get_inputs()[0].name: tensor})
        if output.shape[-2:] != (DETECTOR_ROWS, DETECTOR_COLUMNS):
            raise PoseError(f"the person detector gave {list(output.shape)}, not [1, {DETECTOR_ROWS}, "
                            f"{DETECTOR_COLUMNS}]: it is not DWPose's yolox_l.onnx")
        return person_boxes(output, ratio)

    def estimate(self, image: np.ndarray, boxes: np.ndarray) -> WholeBody:
        """The keypoints of the people in `boxes` (each estimated on its own crop)."""
        image = check_image(image)
        keypoints, scores = [], []
        name = self.estimator.get_inputs()[0].name
        for box in np.asarray(boxes, np.float64).reshape(-1, 4):
            tensor, centre, size = estimator_input(image, box, self.width, self.height)
            simcc_x, simcc_y = self.estimator.run(None, {name: tensor})
            locations, found = decode_simcc(simcc_x.reshape(KEYPOINTS, -1), simcc_y.reshape(KEYPOINTS, -1))
            keypoints.append(to_image(locations, centre, size, self.width, self.height))
            scores.append(found)
        if not keypoints:
            return WholeBody(np.zeros((0, KEYPOINTS + 1, 2), np.float32), np.zeros((0, KEYPOINTS + 1), np.float32))
        points, values = to_openpose(np.stack(keypoints), np.stack(scores).astype(np.float64))
        return WholeBody(points.astype(np.float32), values.astype(np.float32))

    def __call__(self, image: np.ndarray) -> WholeBody:
        """The keypoints of every person found in an RGB uint8 [H, W, 3] frame (see whole_frame_if_none)."""
        boxes = self.detect(image)
        if len(boxes) == 0 and self.whole_frame_if_none:
            height, width = image.shape[:2]
            boxes = np.array([[0.0, 0.0, width, height]])
        return self.estimate(image, boxes)
