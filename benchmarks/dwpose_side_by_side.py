"""DWPose side by side: the reference's own Wholebody (EchoMimic v2's src/models/dwpose: numpy, OpenCV,
onnxruntime) against ours (emo_pipeline/poses/dwpose.py: numpy and onnxruntime, no OpenCV), on the same ONNX
models and the same frames, stage by stage.

Getting the reference (nothing of it is copied here, and this script downloads nothing):

    git clone https://github.com/antgroup/echomimic_v2
    pip install --target /path/to/cv2lib opencv-python-headless==4.10.0.84   # the OpenCV its requirements pin
    PYTHONPATH=/path/to/cv2lib ECHOMIMIC_V2_PATH=/path/to/echomimic_v2 python benchmarks/dwpose_side_by_side.py

(--reference PATH instead of ECHOMIMIC_V2_PATH.) Its modules src/models/dwpose/{onnxdet,onnxpose,wholebody}.py
are imported from the checkout at run time; dwpose_detector.py is not (it builds a CUDA detector on import).

Models (written into a temporary folder by tests/tiny_dwpose.py; the real yzd-v/DWPose files are not needed):
  planted   a detector with five planted rows (two people, a duplicate for NMS, a faint box, a bicycle) and a
            288x384 estimator with planted SimCC peaks, four of its points following the crop's reddest pixel
  nobody    the same estimator, a detector that finds nobody: both sides estimate on the whole frame
  random0, random1   seeded random convolutions of the real models' inputs and outputs ([1, 3, 640, 640] →
            [1, 8400, 85]; [1, 3, 384, 288] → [1, 133, 576] and [1, 133, 768]), whose answers depend on every
            pixel: 14 to 56 people a frame on these frames, from hundreds of overlapping candidates
Frames: drawn (gradients, noise, figures, a red and a blue dot) at 640x480, 1280x720 (the half-size path),
720x1280, 1920x1080, 768x768, 517x333 and 300x900.

Printed, per model pair and frame: people found by each side, and the largest |ours - theirs| of the detector's
input (the letterboxed frame), of the boxes, of the estimator's input (every person's warped, normalised crop
as the model receives it: float32), of the final keypoints (pixels) and of the scores. Ours are float32 where
the reference's keypoints are float64: the keypoints are also compared with the reference's rounded to float32.

Results (2026-12-07, 2 CPU cores; onnxruntime 1.32.0, opencv-python-headless 4.10.0.84, numpy 2.4.6, and again
with the numpy its requirements pin, 1.26.4, the models written first with --models: the same figures):
  every frame, every model pair: the same people (planted 2, nobody 1, random0 16-39, random1 14-56), and
  0 difference in the detector's input, the ratio, the boxes, every estimator input and the scores;
  keypoints 0 against the reference's rounded to float32, and at most 1.2e-4 pixel against its float64
  (that rounding alone, on a 1920x1080 frame).
  Time per frame on these tiny models (a shared, busy machine): ours 2 to 9 times the reference's (numpy's
  resampling: about 25 ms to letterbox a 1280x720 frame and 12 ms a crop, against OpenCV's few; the real
  models, not run here, add their own time to both sides alike).
  Against OpenCV 5.1.0 instead (which the reference does not pin): its warpAffine differs from 4.10's by
  up to 6 grey levels on up to 14% of a crop's pixels (resize is unchanged), so its estimator inputs are
  up to 0.088 apart after normalisation, and the random estimators' argmax moves (keypoints up to 1,870
  pixels apart on random0): how much the reference itself moves with its OpenCV.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from emo_pipeline.poses.dwpose import DWPose, estimator_input, letterbox  # noqa: E402
from reference_common import checkout_path  # noqa: E402

SIZES = [(480, 640), (720, 1280), (1280, 720), (1080, 1920), (768, 768), (333, 517), (900, 300)]  # height, width
def draw_frame(height: int, width: int, seed: int) -> np.ndarray:
    """A frame with something everywhere: two gradients and noise, a few figures, a red and a blue dot."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:height, :width].astype(np.float64)
    image = np.stack([xs / width * 200, ys / height * 180, (xs + ys) / (width + height) * 120], axis=-1)
    image += rng.normal(0, 12, image.shape)
    for _ in range(3):  # a head over a body, somewhere
        cx, cy, scale = rng.uniform(0.2, 0.8) * width, rng.uniform(0.3, 0.7) * height, rng.uniform(0.1, 0.3) * height
        head = (xs - cx) ** 2 + (ys - cy + scale) ** 2 < (0.25 * scale) ** 2
        body = (np.abs(xs - cx) < 0.3 * scale) & (ys > cy - 0.75 * scale) & (ys < cy + scale)
        image[head] = rng.uniform(150, 230, 3)
        image[body] = rng.uniform(20, 250, 3)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for colour, (fx, fy) in (((255, 0, 0), (0.55, 0.3)), ((0, 0, 255), (0.4, 0.6))):
        x, y = int(fx * width), int(fy * height)
        image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = colour
    return image


def write_models(folder: Path) -> dict[str, tuple[Path, Path]]:
    """The four model pairs, written into `folder` unless they are there already (onnx is needed to write them,
    not to read them: written once, they can be compared under a numpy that onnx does not import with)."""
    pairs = {name: (folder / f"{name}_det.onnx", folder / f"{name}_est.onnx")
             for name in ("planted", "nobody", "random0", "random1")}
    pairs["nobody"] = (pairs["nobody"][0], pairs["planted"][1])
    if all(path.is_file() for pair in pairs.values() for path in pair):
        return pairs
    import tiny_dwpose as tiny

    planted = [tiny.Planted(32, 9, 6, log_w=np.log(4), log_h=np.log(8), objectness=0.9, classes={0: 0.95}),
               tiny.Planted(16, 19, 13, dx=0.25, dy=0.1, log_w=np.log(8), log_h=np.log(15), objectness=0.8,
                            classes={0: 0.9}),  # a duplicate of the first
               tiny.Planted(8, 5, 50, log_w=np.log(5), log_h=np.log(5), objectness=0.5, classes={0: 0.5}),  # faint
               tiny.Planted(16, 30, 5, log_w=np.log(3), log_h=np.log(3), objectness=0.95,
                            classes={0: 0.05, 1: 0.99}),  # a bicycle
               tiny.Planted(16, 4, 6, log_w=np.log(4), log_h=np.log(9), objectness=0.7, classes={0: 0.8})]
    rng = np.random.default_rng(7)
    bins = np.stack([rng.integers(0, 576, 133), rng.integers(0, 768, 133)], axis=-1)
    peaks = rng.uniform(0.2, 1.0, (133, 2)).astype(np.float32)
    tiny.write_estimator(pairs["planted"][1], 288, 384, bins, peaks, follow=(9, 10, 100, 120))
    tiny.write_detector(pairs["planted"][0], planted)
    tiny.write_detector(pairs["nobody"][0], planted[2:4])
    for seed in (0, 1):
        tiny.write_random_detector(pairs[f"random{seed}"][0], seed)
        tiny.write_random_estimator(pairs[f"random{seed}"][1], seed)
    return pairs


def biggest(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("nan")
    return float(np.abs(a - b).max()) if a.size else 0.0


def compare(name: str, detector: Path, estimator: Path, frames: list[np.ndarray], modules) -> dict[str, float]:
    onnxdet, onnxpose, Wholebody = modules
    theirs = Wholebody(str(detector), str(estimator), device="cpu")
    ours = DWPose(detector, estimator)
    height, width = theirs.session_pose.get_inputs()[0].shape[2:]
    worst: dict[str, float] = {}
    for image in frames:
        their_input, their_ratio = onnxdet.preprocess(image, (640, 640))
        our_input, our_ratio = letterbox(image)
        their_boxes = onnxdet.inference_detector(theirs.session_det, image)
        our_boxes = ours.detect(image)
        crops, _, _ = onnxpose.preprocess(image, their_boxes, (width, height))
        boxes = their_boxes if len(their_boxes) else [[0, 0, image.shape[1], image.shape[0]]]
        crop_difference = max(biggest(estimator_input(image, np.asarray(box), width, height)[0][0],
                                      crop.transpose(2, 0, 1).astype(np.float32)) for crop, box in zip(crops, boxes))
        start = time.perf_counter()
        their_points, their_scores = theirs(image)
        their_time = time.perf_counter() - start
        start = time.perf_counter()
        found = ours(image)
        our_time = time.perf_counter() - start
        row = {"detector input": biggest(our_input[0], their_input), "ratio": abs(our_ratio - their_ratio),
               "boxes": biggest(our_boxes, np.asarray(their_boxes).reshape(-1, 4)),
               "estimator input": crop_difference, "keypoints": biggest(found.keypoints, their_points),
               "keypoints vs float32": biggest(found.keypoints, their_points.astype(np.float32)),
               "scores": biggest(found.scores, their_scores)}
        print(f"{name:8s} {image.shape[1]:4d}x{image.shape[0]:<4d} people {len(their_points):2d} / "
              f"{len(found.keypoints):2d}  " + "  ".join(f"{k} {v:.3g}" for k, v in row.items())
              + f"  time {their_time * 1000:.0f} / {our_time * 1000:.0f} ms")
        for key, value in row.items():
            worst[key] = max(worst.get(key, 0.0), value) if value == value else float("nan")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", help="a checkout of antgroup/echomimic_v2 (else ECHOMIMIC_V2_PATH)")
    parser.add_argument("--models", type=Path, help="a folder to write the models into, or to read them from when "
                        "they are there (default: a temporary folder)")
    args = parser.parse_args()
    checkout = checkout_path(args.reference, "ECHOMIMIC_V2_PATH", "src/models/dwpose/wholebody.py",
                             "antgroup/echomimic_v2")
    sys.dont_write_bytecode = True  # nothing written into the checkout
    sys.path.insert(0, str(checkout))
    import cv2
    from src.models.dwpose import onnxdet, onnxpose
    from src.models.dwpose.wholebody import Wholebody

    print(f"OpenCV {cv2.__version__}, numpy {np.__version__}; people: theirs / ours; time: theirs / ours")
    frames = [draw_frame(h, w, seed) for seed, (h, w) in enumerate(SIZES)]
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.models or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        worst = {name: compare(name, det, est, frames, (onnxdet, onnxpose, Wholebody))
                 for name, (det, est) in write_models(folder).items()}
    print("largest over all frames:")
    for name, row in worst.items():
        print(f"  {name:8s} " + "  ".join(f"{k} {v:.3g}" for k, v in row.items()))


if __name__ == "__main__":
    main()
