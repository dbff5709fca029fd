"""V-Express's face-keypoint image (its "V-kps"), pixel for pixel as its reference draws it, without OpenCV.

V-Express's keypoint guider reads, per frame, three face keypoints drawn on black: the eye on the image's left
(0), the eye on the image's right (1) and the nose tip (2), as insightface's detector gives them (pixels of the
output frame). Its `draw_kps_image` (datasets/utils.py of tencent-ailab/V-Express, kind 'v') draws with
OpenCV, in this order:

* two sticks, eye 0 to the nose then eye 1 to the nose, each a filled ellipse: centre (int(mean x),
  int(mean y)) of its two points, semi-axes (int(length / 2), 4), rotated by int(degrees(atan2(dy, dx)))
  (dy, dx: first point minus second), turned into a polygon by cv2.ellipse2Poly(..., 0, 360, delta 1) and
  filled by cv2.fillConvexPoly, in the first point's colour times 0.6 (int(float(c) * 0.6): 153);
* then the three dots, cv2.circle of radius 4, filled, at (int(x), int(y)), in full colour.

The colours are (255, 0, 0), (0, 255, 0), (0, 0, 255) written into the array as given; the array is read as
RGB (PIL's Image.fromarray), so eye 0 is red, eye 1 green, the nose blue, and the sticks (153, 0, 0) and
(0, 153, 0): a "V" from the eyes down to the nose.

This module follows OpenCV's integer rules in its own code, reusing poses/draw.py's primitives:

* ellipse2Poly (drawing.cpp) with integer arguments: 361 points at whole degrees 0..360, each
  centre + (a·cos t, b·sin t) rotated by the angle, in double, with OpenCV's sine table (float32 values of
  sin rounded to 7 decimals, made here from the formula), rounded half to even; a point equal to the one
  before it is dropped (a one-point result becomes two copies of the centre);
* fillConvexPoly with integer corners (shift 0): its sides drawn by the integer 8-connected Bresenham line
  (LineIterator, ends clipped to the image first), then each row between the two sides walked down from the
  top corner (draw.convex_fill, the corners put in 16-bit fixed point);
* circle with thickness -1 (the midpoint circle's rows, draw.disc).

The reference's own arithmetic is kept where it decides a pixel: the keypoints' dtype (float32 from its
torch tensors; a float64 array stays float64), the mean of two float32 values as their float32 sum halved,
int() truncating toward zero, and the stick's length as numpy 1.x computed it, the square of each float32
difference in float64 (V-Express pins torch 2.0.1, which needs numpy 1.x). numpy 2 squares float32 scalars
in float32 instead, so with numpy 2 the reference's int(length / 2) can differ by one where length / 2 lies
within float32 rounding of a whole number (benchmarks/vexpress_kps_drawing.py shows such a case).

benchmarks/vexpress_kps_drawing.py holds this against V-Express's own draw_kps_image: 0 pixels apart in 21,030
images (random sets inside, on and beyond the edges, degenerate sets, ten canvas sizes from 1x1 to 384x640;
numpy 1.26 with OpenCV 4.10; run under numpy 2 with OpenCV 5.1, only the constructed near-ties differ, as above).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .draw import NO_PIXELS, SHIFT, Pixels, _clip_line, _joined, convex_fill, disc

KEYPOINTS = 3  # the eye on the image's left, the eye on the image's right, the nose tip
COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255))  # RGB, one per keypoint
STICKS = ((0, 2), (1, 2))  # each eye to the nose; a stick takes its first point's colour, dimmed
STICK_SHADE = 0.6
STICK_HALF_WIDTH = 4  # the ellipse's second semi-axis
DOT_RADIUS = 4
LIMIT = 2.0 ** 24  # coordinates are refused beyond this: OpenCV's points are int32, float32 is exact below it


def draw_face_keypoints(keypoints, height: int, width: int) -> np.ndarray:
    """One frame's keypoint image as V-Express's draw_kps_image(height, width, keypoints) draws it: uint8
    [height, width, 3], RGB. keypoints: [3, 2] pixel (x, y) of the left eye, the right eye and the nose (as the
    image shows them); they may lie outside the image (what falls outside is not drawn)."""
    points = _checked(keypoints, height, width)
    return _render(_geometry(points), height, width).copy()


def draw_face_keypoint_frames(sequence, height: int, width: int) -> np.ndarray:
    """A keypoint image per frame: [F, 3, 2] → uint8 [F, height, width, 3], RGB. Frames whose sticks and dots
    land on the same pixels are drawn once (every frame of a photo's own keypoints, for one)."""
    points = np.asarray(sequence)
    if points.ndim != 3:
        raise ValueError(f"a keypoint sequence must be [frames, {KEYPOINTS}, 2]; got shape {tuple(points.shape)}")
    frames = np.empty((len(points), height, width, 3), np.uint8)
    for i, frame in enumerate(points):
        frames[i] = _render(_geometry(_checked(frame, height, width)), height, width)
    return frames


def stick_polygon(first, second) -> list[tuple[int, int]]:
    """The polygon V-Express fills for the stick from `first` to `second` ((x, y) numpy scalars or floats of
    the keypoints' dtype): cv2.ellipse2Poly's points for that stick."""
    return ellipse_polygon(*_stick(np.asarray([first, second])))


def ellipse_polygon(cx: int, cy: int, a: int, b: int, angle: int) -> list[tuple[int, int]]:
    """cv2.ellipse2Poly((cx, cy), (a, b), angle, 0, 360, 1): the whole ellipse at every degree."""
    while angle < 0:
        angle += 360
    while angle > 360:
        angle -= 360
    table = _sine_table()
    alpha, beta = table[450 - angle], table[angle]  # cos, sin of the rotation (float32), as its sincos()
    points: list[tuple[int, int]] = []
    for degree in range(361):
        x = a * table[450 - degree]
        y = b * table[degree]
        point = (round(cx + x * alpha - y * beta), round(cy + x * beta + y * alpha))  # cvRound: half to even
        if not points or point != points[-1]:
            points.append(point)
    if len(points) == 1:
        points = [(cx, cy), (cx, cy)]
    return points


def fill_convex_polygon(points: list[tuple[int, int]], height: int, width: int) -> Pixels:
    """The pixels cv2.fillConvexPoly sets for integer corners (shift 0, 8-connected): each side as an integer
    Bresenham line, then the rows between the two sides walked from the top corner."""
    sides = [line_8(*points[i - 1], *points[i], height, width) for i in range(len(points))]
    xs = [x << SHIFT for x, _ in points]
    ys = [y << SHIFT for _, y in points]
    return _joined(sides + [convex_fill(xs, ys, height, width)])


def line_8(x0: int, y0: int, x1: int, y1: int, height: int, width: int) -> Pixels:
    """The pixels of OpenCV's integer 8-connected line (LineIterator, left to right): both ends clipped to the
    image when either lies outside it, then one pixel a step along the longer axis, the other coordinate
    stepped by Bresenham's error term (err = dx - 2 dy; a step across when it is negative)."""
    if not (0 <= x0 < width and 0 <= x1 < width and 0 <= y0 < height and 0 <= y1 < height):
        clipped = _clip_line(width, height, x0, y0, x1, y1)
        if clipped is None:
            return NO_PIXELS
        x0, y0, x1, y1 = clipped
    if x1 < x0:  # drawn left to right
        x0, y0, x1, y1 = x1, y1, x0, y0
    dx, dy = x1 - x0, y1 - y0
    step_y = -1 if dy < 0 else 1
    dy = abs(dy)
    steep = dy > dx
    major, minor = (dy, dx) if steep else (dx, dy)
    err = major - 2 * minor
    rows, cols = [], []
    x, y = x0, y0
    for _ in range(major + 1):
        rows.append(y)
        cols.append(x)
        across = err < 0
        err += -2 * minor + (2 * major if across else 0)
        if steep:
            y += step_y
            x += 1 if across else 0
        else:
            x += 1
            y += step_y if across else 0
    return np.array(rows, np.int64), np.array(cols, np.int64)


Geometry = tuple[tuple[tuple[int, int, int, int, int], ...], tuple[tuple[int, int], ...]]


def _geometry(points: np.ndarray) -> Geometry:
    """What decides the image: each stick's (cx, cy, a, b, angle) and each dot's integer centre."""
    sticks = tuple(_stick(points[[a, b]]) for a, b in STICKS)
    dots = tuple((int(x), int(y)) for x, y in points)  # the reference's int(): toward zero
    return sticks, dots


def _stick(pair: np.ndarray) -> tuple[int, int, int, int, int]:
    """ellipse2Poly's arguments for a stick between two points, with the reference's arithmetic."""
    x, y = pair[:, 0], pair[:, 1]
    dx, dy = x[0] - x[1], y[0] - y[1]  # in the keypoints' dtype
    # numpy 1.x: a float32 (or float64) scalar ** 2 is float64; the sum and ** 0.5 likewise
    length = (float(dx) ** 2 + float(dy) ** 2) ** 0.5
    angle = int(math.degrees(math.atan2(float(dy), float(dx))))
    centre_x = int(float(x[0] + x[1]) / 2)  # np.mean of two: their sum in the dtype, halved
    centre_y = int(float(y[0] + y[1]) / 2)
    return centre_x, centre_y, int(length / 2), STICK_HALF_WIDTH, angle


@lru_cache(maxsize=4)
def _render(geometry: Geometry, height: int, width: int) -> np.ndarray:
    """The image of one geometry (cached: a video often repeats it); read-only, callers copy."""
    sticks, dots = geometry
    canvas = np.zeros((height, width, 3), np.uint8)
    for (first, _), stick in zip(STICKS, sticks):
        rows, cols = fill_convex_polygon(ellipse_polygon(*stick), height, width)
        canvas[rows, cols] = tuple(int(float(c) * STICK_SHADE) for c in COLOURS[first])
    for colour, (x, y) in zip(COLOURS, dots):
        rows, cols = disc(x, y, DOT_RADIUS, height, width)
        canvas[rows, cols] = colour
    canvas.flags.writeable = False
    return canvas


@lru_cache(maxsize=1)
def _sine_table() -> tuple[float, ...]:
    """OpenCV's SinTable: sin of 0..450 degrees rounded to 7 decimals, as float32 (kept as Python floats)."""
    degrees = np.arange(451, dtype=np.float64)
    return tuple(float(v) for v in np.round(np.sin(np.radians(degrees)), 7).astype(np.float32))


def _checked(keypoints, height: int, width: int) -> np.ndarray:
    points = np.asarray(keypoints)
    if points.shape != (KEYPOINTS, 2):
        raise ValueError(f"face keypoints must be [{KEYPOINTS}, 2] (x, y) pixels: the left eye, the right eye and "
                         f"the nose; got shape {tuple(points.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"the keypoint image must be at least 1x1; got {height}x{width}")
    if points.dtype not in (np.float32, np.float64):  # integers (and float16) as the reference's float64 would
        points = points.astype(np.float32 if points.dtype == np.float16 else np.float64)
    if not np.isfinite(points).all() or np.abs(points).max() >= LIMIT:
        raise ValueError(f"face keypoints must be finite pixel coordinates within ±{LIMIT:.0f}; got {points.tolist()}")
    return points
