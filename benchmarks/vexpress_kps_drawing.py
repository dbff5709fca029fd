"""V-Express's keypoint images: our renderer (emo_pipeline/poses/face_keypoints.py) against V-Express's own
draw_kps_image run with OpenCV, pixel by pixel, over many random keypoint sets and canvas sizes.

Nothing of V-Express is copied here: draw_kps_image is loaded at run time from the user's checkout of
tencent-ailab/V-Express (datasets/utils.py, by its file path; it needs numpy and OpenCV). Nothing is downloaded.

    VEXPRESS_PATH=/path/to/V-Express PYTHONPATH=/path/to/opencv python benchmarks/vexpress_kps_drawing.py \\
        [--sets 300] [--seed 0]

Each keypoint set is drawn by both, as float32 [3, 2] (as inference.py hands them: rows of a float32 torch
tensor), on canvases of these sizes (height x width): 512x512 (V-Express's), 1x1, 2x3, 7x5, 31x64, 64x31,
96x96, 200x333, 333x200, 384x640. Kinds of sets, each drawn on every size:

  face        two eyes side by side above a nose, inside the canvas (what insightface gives)
  inside      three points anywhere inside
  edges       points within 6 px of a border, on either side (sticks and dots cut by it)
  outside     points up to half the canvas beyond it (whole sticks and dots off the canvas)
  far         points up to 3 canvases away (polygons wholly outside, clipped sides)
  degenerate  coincident points, points under 2 px apart (a zero semi-axis), integer and half-pixel
              coordinates, coordinates in (-1, 0) (int() truncates them to 0), vertical and horizontal sticks
  float64     the 'inside' kind as float64 arrays (a list of Python floats arrives so)
  near-tie    sticks whose length / 2 lies within float32 rounding of a whole number (found by search): where
              numpy 1.x and 2 give the reference different semi-axes (see below)

It prints, per kind, the images, the pixels that differ and in how many images, and the time per image of each.

Results (tencent-ailab/V-Express 6814f7d; --sets 300, seed 0: 300 sets of each of the 7 random kinds on each of
the 10 sizes, 21,000 images, plus 30 near-tie sets at 512x512):
  numpy 1.26.4 with opencv-python-headless 4.10.0 (numpy 1.x is what V-Express ran with: its torch 2.0.1 needs
      it): 0 pixels differ in all 21,030 images, near-tie included.
  numpy 2.4.6 with opencv-python-headless 5.1.0: 0 pixels differ in the 21,000 random images; the 30 near-tie
      images all differ, 1,332 pixels in all: numpy 2 squares a float32 difference in float32, so the
      reference's length / 2 rounds up to the whole number and its ellipse is a pixel longer at each end
      (numpy 1 squares in float64, as our renderer does). No random set came near such a tie.
  So OpenCV 4.10 and 5.1 draw these images alike; only numpy's arithmetic in the reference's Python differs.
Time per 512x512 image (2 shared CPU cores, other jobs running): ours 3.6-6.2 ms drawn afresh, 0.03-0.07 ms
for a geometry drawn before (cached); the reference with OpenCV 0.13-0.26 ms.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import vexpress_reference as vr  # noqa: E402

from emo_pipeline.poses import face_keypoints as fk  # noqa: E402

SIZES = ((512, 512), (1, 1), (2, 3), (7, 5), (31, 64), (64, 31), (96, 96), (200, 333), (333, 200), (384, 640))
NEAR_TIES = 30


def face(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Eyes side by side above the nose, inside the canvas."""
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.3, 0.6) * h
    gap, drop = rng.uniform(0.08, 0.3) * w, rng.uniform(0.05, 0.2) * h
    tilt = rng.uniform(-0.3, 0.3)
    eyes = np.array([[-gap / 2, 0.0], [gap / 2, 0.0]])
    rot = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
    points = np.vstack([eyes @ rot.T, [[rng.normal(0, gap * 0.1), drop]]]) + [cx, cy]
    return points


def uniform(rng: np.random.Generator, h: int, w: int, margin: float) -> np.ndarray:
    """Anywhere in the canvas widened by `margin` canvases each side."""
    return np.stack([rng.uniform(-margin * w, (1 + margin) * w, 3), rng.uniform(-margin * h, (1 + margin) * h, 3)], 1)


def edges(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Within 6 px of a border, on either side."""
    points = uniform(rng, h, w, 0.0)
    for p in points:
        axis = rng.integers(2)
        size = (w, h)[axis]
        p[axis] = (0 if rng.random() < 0.5 else size) + rng.uniform(-6, 6)
    return points


def degenerate(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Coincident, very close, integer, half-pixel, slightly negative, axis-parallel."""
    base = uniform(rng, h, w, 0.0)
    kind = rng.integers(6)
    if kind == 0:
        base[1] = base[2] = base[0]
    elif kind == 1:
        base[0] = base[2] + rng.uniform(-1.9, 1.9, 2)
        base[1] = base[2] + rng.uniform(-1.9, 1.9, 2)
    elif kind == 2:
        base = np.round(base)
    elif kind == 3:
        base = np.floor(base) + 0.5
    elif kind == 4:
        base[rng.integers(3), rng.integers(2)] = rng.uniform(-0.999, 0.0)
        base[rng.integers(3), rng.integers(2)] = rng.uniform(-0.999, 0.0)
    else:
        axis = rng.integers(2)
        base[0, axis] = base[2, axis]
        base[1, 1 - axis] = base[2, 1 - axis]
    return base


def near_ties(rng: np.random.Generator, count: int, size: int = 512) -> list[np.ndarray]:
    """Keypoint sets whose first stick's float32 length (numpy 2's arithmetic) rounds to a whole even number
    the float64 length (numpy 1's) stays just below: int(length / 2) differs by one."""
    found = []
    while len(found) < count:
        k = int(rng.integers(20, 120))
        x0, y0 = np.float32(rng.uniform(150, 350)), np.float32(rng.uniform(100, 250))
        angle = rng.uniform(0.3, 1.2)
        x1 = np.float32(x0 + 2 * k * np.cos(angle))
        y1 = np.float32(y0 + 2 * k * np.sin(angle))
        for steps in range(-3, 4):
            y = y1
            for _ in range(abs(steps)):
                y = np.nextafter(y, np.float32(np.inf if steps > 0 else -np.inf))
            dx, dy = np.float32(x0 - x1), np.float32(y0 - y)
            as_float32 = float(np.sqrt(np.float32(dx * dx) + np.float32(dy * dy)))  # numpy 2's: all float32
            as_float64 = (float(dx) ** 2 + float(dy) ** 2) ** 0.5  # numpy 1's: squares in float64
            if int(as_float32 / 2) != int(as_float64 / 2) and 0 <= y < size and 0 <= x1 < size:
                found.append(np.array([[x0, y0], [size - x0, y0], [x1, y]], np.float32))
                break
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None, help="a V-Express checkout (default: VEXPRESS_PATH)")
    parser.add_argument("--sets", type=int, default=300, help="keypoint sets of each kind per canvas size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import cv2

    reference = vr.kps_drawing_module(vr.vexpress_checkout(args.reference)).draw_kps_image
    rng = np.random.default_rng(args.seed)
    kinds = {
        "face": lambda h, w: face(rng, h, w),
        "inside": lambda h, w: uniform(rng, h, w, 0.0),
        "edges": lambda h, w: edges(rng, h, w),
        "outside": lambda h, w: uniform(rng, h, w, 0.5),
        "far": lambda h, w: uniform(rng, h, w, 3.0),
        "degenerate": lambda h, w: degenerate(rng, h, w),
    }
    cases: dict[str, list[tuple[np.ndarray, int, int]]] = {name: [] for name in [*kinds, "float64", "near-tie"]}
    for h, w in SIZES:
        for name, make in kinds.items():
            cases[name] += [(make(h, w).astype(np.float32), h, w) for _ in range(args.sets)]
        cases["float64"] += [(uniform(rng, h, w, 0.0).astype(np.float64), h, w) for _ in range(args.sets)]
    cases["near-tie"] = [(points, 512, 512) for points in near_ties(rng, NEAR_TIES)]

    print(f"numpy {np.__version__}, OpenCV {cv2.__version__}; V-Express {vr.VEXPRESS_COMMIT[:7]}")
    print(f"{'kind':<11} {'images':>7} {'differ':>7} {'pixels':>8}")
    times = {"ours": 0.0, "reference": 0.0}
    count_512 = 0
    for name, items in cases.items():
        images = pixels = 0
        for points, h, w in items:
            start = time.perf_counter()
            theirs = reference(h, w, points)
            middle = time.perf_counter()
            fk._render.cache_clear()  # time a first drawing, not the cache
            ours = fk.draw_face_keypoints(points, h, w)
            end = time.perf_counter()
            if (h, w) == (512, 512):
                times["reference"] += middle - start
                times["ours"] += end - middle
                count_512 += 1
            differ = int((theirs != ours).any(axis=2).sum())
            images += differ > 0
            pixels += differ
        print(f"{name:<11} {len(items):>7} {images:>7} {pixels:>8,}")
    print(f"time per 512x512 image: ours {1e3 * times['ours'] / count_512:.2f} ms, "
          f"the reference {1e3 * times['reference'] / count_512:.2f} ms")
    fk._render.cache_clear()
    points = cases["face"][0][0]
    fk.draw_face_keypoints(points, 512, 512)
    start = time.perf_counter()
    for _ in range(100):
        fk.draw_face_keypoints(points, 512, 512)
    print(f"a repeated geometry (cached): {1e3 * (time.perf_counter() - start) / 100:.2f} ms")


if __name__ == "__main__":
    main()
