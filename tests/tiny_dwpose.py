"""Tiny ONNX stand-ins for DWPose's two models, built with onnx.helper, of the real models' input and output kinds.

Meaningful ones, whose answers a test can work out on paper:
    write_detector   a YOLOX-format [1, 8400, 85] output that is constant but for the planted rows: each Planted
                     row is one box at a known grid cell with known objectness and class scores (the rest score 0)
    write_estimator  SimCC outputs whose peaks sit at planted bins with planted heights, and, for the keypoints
                     told to follow it, at the column and row of the brightest value of one input channel
                     (a red dot drawn in the frame shows where they must land)
Random ones for the side-by-side benchmark: small convolutions with seeded weights, whose answers depend on
every pixel of their input (write_random_detector, write_random_estimator).
A model of any input and output shapes, for the refusals: write_shaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 640
STRIDES = (8, 16, 32)
ROWS = sum((SIZE // s) ** 2 for s in STRIDES)
CLASSES = 80
KEYPOINTS = 133
OPSET = 13


@dataclass(frozen=True)
class Planted:
    """One detector row: the box centred at ((cell_x + dx) * stride, (cell_y + dy) * stride) in the 640x640
    letterboxed frame, exp(log_w) * stride wide and exp(log_h) * stride high; objectness and class scores
    (already through their sigmoid, as YOLOX's exported model gives them)."""
    stride: int
    cell_x: int
    cell_y: int
    dx: float = 0.5
    dy: float = 0.5
    log_w: float = 1.0
    log_h: float = 1.0
    objectness: float = 1.0
    classes: dict[int, float] = field(default_factory=lambda: {0: 1.0})

    @property
    def row(self) -> int:
        before = sum((SIZE // s) ** 2 for s in STRIDES[:STRIDES.index(self.stride)])
        return before + self.cell_y * (SIZE // self.stride) + self.cell_x

    def box(self) -> np.ndarray:
        """x0, y0, x1, y1 in the 640 frame (float64, worked out directly)."""
        cx, cy = (self.cell_x + self.dx) * self.stride, (self.cell_y + self.dy) * self.stride
        w, h = np.exp(self.log_w) * self.stride, np.exp(self.log_h) * self.stride
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def person_score(self) -> float:
        return self.objectness * self.classes.get(0, 0.0)


def _save(nodes, name, inputs, outputs, initializers, path) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # what the installed onnxruntime reads, whatever onnx writes by default
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _value(name: str, shape) -> onnx.ValueInfoProto:
    dims = [d if isinstance(d, int) else f"d{i}" for i, d in enumerate(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _consumed(input_name: str) -> tuple[list, list]:
    """Nodes making `zero`, [1] = 0 * the input's mean: added to an output so the graph reads its input."""
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["mean", "nought"], ["zero"])]
    return nodes, [numpy_helper.from_array(np.zeros(1, np.float32), "nought")]


def write_detector(path: str | Path, planted: list[Planted]) -> Path:
    rows = np.zeros((1, ROWS, 4 + 1 + CLASSES), np.float32)
    for p in planted:
        rows[0, p.row, :5] = (p.dx, p.dy, p.log_w, p.log_h, p.objectness)
        for cls, score in p.classes.items():
            rows[0, p.row, 5 + cls] = score
    nodes, inits = _consumed("images")
    nodes.append(helper.make_node("Add", ["rows", "zero"], ["output"]))
    inits.append(numpy_helper.from_array(rows, "rows"))
    return _save(nodes, "yolox_format", [_value("images", [1, 3, SIZE, SIZE])],
                 [_value("output", [1, ROWS, 4 + 1 + CLASSES])], inits, path)


def write_estimator(path: str | Path, width: int = 48, height: int = 64, bins: np.ndarray | None = None,
                    peaks: np.ndarray | None = None, follow: tuple[int, ...] = (), channel: int = 0) -> Path:
    """SimCC outputs [1, 133, 2 * width] and [1, 133, 2 * height]. Keypoint k peaks at bins[k] = (x bin, y bin)
    with heights peaks[k] = (x peak, y peak) over a floor of 0.01 (a point with no bins or peaks is all 0); a
    keypoint in `follow` instead takes, on each axis, the largest value of input channel `channel` along that
    column or row, each value over two bins, so its first peak bin is twice the brightest pixel's column or row."""
    bins = np.zeros((KEYPOINTS, 2), np.int64) if bins is None else np.asarray(bins)
    peaks = np.zeros((KEYPOINTS, 2), np.float32) if peaks is None else np.asarray(peaks, np.float32)
    base_x, base_y = np.zeros((KEYPOINTS, 2 * width), np.float32), np.zeros((KEYPOINTS, 2 * height), np.float32)
    gain = np.zeros((KEYPOINTS, 1), np.float32)
    for k in range(KEYPOINTS):
        if k in follow:
            gain[k] = 1.0
        elif peaks[k].any():
            base_x[k], base_y[k] = 0.01, 0.01
            base_x[k, bins[k, 0]], base_y[k, bins[k, 1]] = peaks[k]
    nodes, inits = [], [numpy_helper.from_array(base_x, "base_x"), numpy_helper.from_array(base_y, "base_y"),
                        numpy_helper.from_array(gain, "gain"),
                        numpy_helper.from_array(np.array([channel], np.int64), "channel")]
    nodes.append(helper.make_node("Gather", ["input", "channel"], ["plane"], axis=1))  # [1, 1, H, W]
    for axis, reduced, n, out in ((2, "cols", width, "simcc_x"), (3, "rows", height, "simcc_y")):
        twice = np.repeat(np.eye(n, dtype=np.float32), 2, axis=1)  # each value over two bins
        inits.append(numpy_helper.from_array(twice, f"twice_{reduced}"))
        nodes += [helper.make_node("ReduceMax", ["plane"], [reduced], axes=[1, axis], keepdims=0),  # [1, n]
                  helper.make_node("MatMul", [reduced, f"twice_{reduced}"], [f"{reduced}2"]),  # [1, 2n]
                  helper.make_node("Mul", [f"{reduced}2", "gain"], [f"{reduced}_k"]),  # [133, 2n]
                  helper.make_node("Add", [f"{reduced}_k", f"base_{out[-1]}"], [f"{out}_2d"]),
                  helper.make_node("Unsqueeze", [f"{out}_2d", "zero_axis"], [out])]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axis"))
    return _save(nodes, "rtmpose_format", [_value("input", [1, 3, height, width])],
                 [_value("simcc_x", [1, KEYPOINTS, 2 * width]), _value("simcc_y", [1, KEYPOINTS, 2 * height])],
                 inits, path)


def write_random_detector(path: str | Path, seed: int = 0, objectness_bias: float = -5.0, size_bias: float = 2.5,
                          spread: float = 3.0) -> Path:
    """YOLOX-format output from one patch convolution per stride (kernel = stride) of the 0-255 input: box
    offsets and log sizes raw, objectness and the 80 classes through a sigmoid, as the exported model gives them.
    objectness_bias shifts the objectness logits (lower: fewer people), size_bias the log sizes (higher: larger
    boxes, more of them overlapping for NMS to remove), spread the logits' spread over the cells; the person
    class is likely everywhere, the other classes not."""
    rng = np.random.default_rng(seed)
    nodes, inits, levels = [], [], []
    for stride in STRIDES:
        weight = (rng.standard_normal((85, 3, stride, stride)) * spread / (128.0 * stride * np.sqrt(3)))
        weight = weight.astype(np.float32)
        bias = np.zeros(85, np.float32)
        bias[:2], bias[2:4], bias[4], bias[5], bias[6:] = 0.5, size_bias, objectness_bias, 2.0, -3.0
        inits += [numpy_helper.from_array(weight, f"w{stride}"), numpy_helper.from_array(bias, f"b{stride}")]
        nodes += [helper.make_node("Sub", ["images", "grey"], [f"centred{stride}"]),
                  helper.make_node("Conv", [f"centred{stride}", f"w{stride}", f"b{stride}"], [f"c{stride}"],
                                   kernel_shape=[stride, stride], strides=[stride, stride]),
                  helper.make_node("Reshape", [f"c{stride}", "flat_shape"], [f"f{stride}"])]
        levels.append(f"f{stride}")
    inits += [numpy_helper.from_array(np.array([1, 85, -1], np.int64), "flat_shape"),
              numpy_helper.from_array(np.full((1, 3, 1, 1), 127.5, np.float32), "grey"),
              numpy_helper.from_array(np.array([4, 81], np.int64), "split")]
    nodes += [helper.make_node("Concat", levels, ["all"], axis=2),
              helper.make_node("Transpose", ["all"], ["rows"], perm=[0, 2, 1]),
              helper.make_node("Split", ["rows", "split"], ["box", "logits"], axis=2),
              helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
              helper.make_node("Concat", ["box", "probabilities"], ["output"], axis=2)]
    return _save(nodes, "random_yolox", [_value("images", [1, 3, SIZE, SIZE])],
                 [_value("output", [1, ROWS, 85])], inits, path)


def write_random_estimator(path: str | Path, seed: int = 0, width: int = 288, height: int = 384) -> Path:
    """SimCC outputs from a 3x3 convolution (3 → 8 channels, ReLU) of the normalised crop, its maxima along
    columns and rows mixed into 133 keypoints and spread onto 2x bins by seeded matrices, plus a per-keypoint
    bias (some negative: those points score below 0)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) / 4, "conv_w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) / 4, "conv_b"),
             numpy_helper.from_array(rng.standard_normal((8, KEYPOINTS)).astype(np.float32) / 3, "mix")]
    nodes = [helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["conv"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["conv"], ["features"])]  # [1, 8, H, W]
    for axis, n, out in ((2, width, "simcc_x"), (3, height, "simcc_y")):
        inits += [numpy_helper.from_array((rng.standard_normal((n, 2 * n)) / np.sqrt(n)).astype(np.float32),
                                          f"spread_{out}"),
                  numpy_helper.from_array(rng.standard_normal((KEYPOINTS, 1)).astype(np.float32), f"bias_{out}")]
        nodes += [helper.make_node("ReduceMax", ["features"], [f"max_{out}"], axes=[axis], keepdims=0),  # [1, 8, n]
                  helper.make_node("Transpose", [f"max_{out}"], [f"t_{out}"], perm=[0, 2, 1]),  # [1, n, 8]
                  helper.make_node("MatMul", [f"t_{out}", "mix"], [f"m_{out}"]),  # [1, n, 133]
                  helper.make_node("Transpose", [f"m_{out}"], [f"k_{out}"], perm=[0, 2, 1]),  # [1, 133, n]
                  helper.make_node("MatMul", [f"k_{out}", f"spread_{out}"], [f"s_{out}"]),  # [1, 133, 2n]
                  helper.make_node("Add", [f"s_{out}", f"bias_{out}"], [out])]
    return _save(nodes, "random_rtmpose", [_value("input", [1, 3, height, width])],
                 [_value("simcc_x", [1, KEYPOINTS, 2 * width]), _value("simcc_y", [1, KEYPOINTS, 2 * height])],
                 inits, path)


def write_shaped(path: str | Path, inputs: list[list], outputs: list[list]) -> Path:
    """A model of the given input and output shapes (an int, or None for a named dimension): each output a
    constant of zeros (its named dimensions 1), the inputs unread. For the refusals of models of the wrong kind."""
    nodes, inits = [], []
    for i, shape in enumerate(outputs):
        inits.append(numpy_helper.from_array(np.zeros([d or 1 for d in shape], np.float32), f"zeros{i}"))
        nodes.append(helper.make_node("Identity", [f"zeros{i}"], [f"output{i}"]))
    return _save(nodes, "shaped", [_value(f"input{i}", s) for i, s in enumerate(inputs)],
                 [_value(f"output{i}", s) for i, s in enumerate(outputs)], inits, path)
