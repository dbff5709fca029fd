"""EchoMimic v2's hand-pose image, pixel for pixel as its reference draws it, without OpenCV.

The reference (`draw_pose_select_v2` in antgroup/echomimic_v2's src/utils/dwpose_util.py, called with
ref_w=800) draws on a black canvas whose shorter side is 800 pixels, with OpenCV: hand by hand, the 20
bones as lines of thickness 2, coloured by bone (hue ie/20, times the two joints' scores), then the 21
joints as filled discs of radius 4 (red times the joint's score); it resizes the canvas to the frame
(cv2.resize, bilinear) and swaps BGR to RGB. The pose encoder was trained on such images, so this module
follows OpenCV's integer rules, in its own code:

* a thick line (drawing.cpp's ThickLine) is a quadrilateral around the segment, its corners in 16-bit fixed
  point, filled by the convex-polygon scan (FillConvexPoly: its sides drawn one pixel a step by Line2,
  clipped by clipLine, then each row between the two sides' rounded x), plus a disc of radius 1 (a plus
  sign) at each end;
* a disc (Circle) is the midpoint circle's rows filled;
* the resize of an 8-bit image (resize.cpp) weighs two source pixels per axis with 11-bit weights rounded
  from float32 offsets, sums rows in int32, and rounds the columns as its SIMD path does
  (`((b0*(r0>>4))>>16) + ((b1*(r1>>4))>>16) + 2 >> 2`); an exact halving averages 2x2 blocks instead.

Colours are written (r, g, b) into what OpenCV treats as a BGR canvas, so after the swap a bone shows
(b, g, r) of its hue and a joint is pure red.

OpenCV changed one rule in late 2025 (pull request #27366, in 5.1): a thick line's integer ends are first
clipped to the canvas widened by the thickness, so a bone that leaves the canvas steps differently.
`clip_lines=True` draws that way; the default is OpenCV 4.10's, the version the reference pins
(requirements.txt: opencv-contrib-python==4.10.0.84). Lines inside the canvas are the same in both.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

SHIFT = 16  # OpenCV's drawing keeps coordinates in 16-bit fixed point
ONE = 1 << SHIFT
HALF = ONE >> 1
DBL_EPSILON = 2.220446049250313e-16

BONES = ((0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
         (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20))
JOINTS = 21
EPS = 0.01  # the reference draws a point only if its pixel coordinates (ints) exceed this: both >= 1
THICKNESS = 2  # the bones' line thickness
BONE_HALF_WIDTH = THICKNESS << (SHIFT - 1)  # in fixed point
CAP_RADIUS = (BONE_HALF_WIDTH + HALF) >> SHIFT  # the discs at a thick line's ends: radius 1
JOINT_RADIUS = 4
COEF_BITS = 11  # resize.cpp's INTER_RESIZE_COEF_BITS
COEF_ONE = 1 << COEF_BITS
MARGIN = JOINT_RADIUS + 2  # around the drawn points, the canvas holds nothing beyond this

Pixels = tuple[np.ndarray, np.ndarray]  # (rows, columns)
NO_PIXELS: Pixels = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def draw_hands(hands: np.ndarray, scores: np.ndarray, height: int, width: int,
               short_side: int = 800, *, clip_lines: bool = False) -> np.ndarray:
    """The reference's pose image for one frame: uint8 [height, width, 3], RGB.

    hands: [N, 21, 2] (x, y) normalised to the frame, N hands drawn in order (later ones over earlier);
    scores: [N, 21] the detector's scores (they may exceed 1; colours saturate). `short_side` is the
    reference's ref_w, the shorter side of the canvas drawn on before the resize. `clip_lines`: draw
    bones leaving the canvas as OpenCV 5.1 does rather than as 4.10 (see the module's note)."""
    hands, scores = _checked(hands, scores, height, width)
    if short_side < 1:
        raise ValueError(f"the canvas's short side must be at least 1 pixel; got {short_side}")
    canvas_h, canvas_w = canvas_size(height, width, short_side)
    canvas = np.zeros((canvas_h, canvas_w, 3), np.uint8)
    # the reference's int(x * W): the product in the input's precision, truncated toward zero
    px = _to_int(hands[..., 0] * canvas_w)
    py = _to_int(hands[..., 1] * canvas_h)
    shown = (px > EPS) & (py > EPS)
    bone_scores = _to_int(scores[:, [a for a, _ in BONES]] * scores[:, [b for _, b in BONES]] * 255)
    joint_scores = np.clip(_to_int(scores * 255), 0, 255)
    for hand in range(len(hands)):
        for bone, (a, b) in enumerate(BONES):
            if shown[hand, a] and shown[hand, b]:
                rows, cols = thick_line(int(px[hand, a]), int(py[hand, a]), int(px[hand, b]),
                                        int(py[hand, b]), canvas_h, canvas_w, clip_lines)
                canvas[rows, cols] = bone_colour(bone, int(bone_scores[hand, bone]))
        for joint in range(JOINTS):
            if shown[hand, joint]:
                rows, cols = disc(int(px[hand, joint]), int(py[hand, joint]), JOINT_RADIUS, canvas_h, canvas_w)
                canvas[rows, cols] = (0, 0, joint_scores[hand, joint])
    if shown.any():  # nothing is drawn outside the shown points' box (plus the widest mark)
        box = (int(py[shown].min()) - MARGIN, int(py[shown].max()) + MARGIN,
               int(px[shown].min()) - MARGIN, int(px[shown].max()) + MARGIN)
    else:
        box = None
    return resize_linear(canvas, height, width, box)[..., ::-1].copy()  # BGR canvas -> RGB


def paste_pose(drawn: np.ndarray, placement: tuple[int, int, int, int], frame_size: int) -> np.ndarray:
    """The drawn image at rows rb:re, columns cb:ce of a black frame_size x frame_size frame, as the
    reference places it (draw_pose_params = [imh_new, imw_new, rb, re, cb, ce])."""
    rb, re, cb, ce = (int(v) for v in placement)
    if not (0 <= rb < re <= frame_size and 0 <= cb < ce <= frame_size):
        raise ValueError(f"pose placement rows {rb}:{re}, columns {cb}:{ce} do not lie inside a "
                         f"{frame_size}x{frame_size} frame")
    drawn = np.asarray(drawn)
    if drawn.dtype != np.uint8 or drawn.shape != (re - rb, ce - cb, 3):
        raise ValueError(f"the drawn pose is {drawn.dtype} {tuple(drawn.shape)}; placement rows {rb}:{re}, "
                         f"columns {cb}:{ce} needs uint8 ({re - rb}, {ce - cb}, 3)")
    frame = np.zeros((frame_size, frame_size, 3), np.uint8)
    frame[rb:re, cb:ce] = drawn
    return frame


def canvas_size(height: int, width: int, short_side: int = 800) -> tuple[int, int]:
    """The canvas the reference draws on: (int(H * sr), int(W * sr)), sr = short_side / min(H, W) in
    floating point (1 when equal), as the reference computes it."""
    side = min(height, width)
    ratio = short_side / side if side != short_side else 1
    return int(height * ratio), int(width * ratio)


def bone_colour(bone: int, score: int) -> tuple[int, int, int]:
    """matplotlib's hsv_to_rgb([bone/20, 1, 1]) times the score, each channel rounded half to even and
    saturated as OpenCV turns a Scalar into 8-bit (cvRound, saturate_cast)."""
    h6 = bone / float(len(BONES)) * 6.0
    sector = int(h6)
    f = h6 - sector
    q, t = 1.0 - f, 1.0 - (1.0 - f)  # matplotlib's expressions with s = v = 1 (t is not always f)
    rgb = ((1.0, t, 0.0), (q, 1.0, 0.0), (0.0, 1.0, t), (0.0, q, 1.0), (t, 0.0, 1.0), (1.0, 0.0, q))[sector % 6]
    return tuple(int(min(max(round(c * score), 0), 255)) for c in rgb)


def thick_line(x0: int, y0: int, x1: int, y1: int, height: int, width: int, clip: bool = False) -> Pixels:
    """The pixels cv2.line sets for a thickness-2, 8-connected line between two integer points; `clip`:
    as OpenCV 5.1, which first clips the ends to the image widened by the thickness on every side."""
    if clip:
        ends = _clip_line(width + 2 * THICKNESS, height + 2 * THICKNESS, x0 + THICKNESS, y0 + THICKNESS,
                          x1 + THICKNESS, y1 + THICKNESS)
        if ends is None:  # the line and its caps lie wholly outside
            return NO_PIXELS
        x0, y0, x1, y1 = (v - THICKNESS for v in ends)
    p0x, p0y, p1x, p1y = x0 << SHIFT, y0 << SHIFT, x1 << SHIFT, y1 << SHIFT
    dx, dy = (p0x - p1x) * (1.0 / ONE), (p1y - p0y) * (1.0 / ONE)
    r = dx * dx + dy * dy
    parts = []
    if abs(r) > DBL_EPSILON:
        r = BONE_HALF_WIDTH / math.sqrt(r)
        ex, ey = round(dy * r), round(dx * r)  # the half-width across the segment; round() is cvRound's half-even
        xs = [p0x + ex, p0x - ex, p1x - ex, p1x + ex]
        ys = [p0y + ey, p0y - ey, p1y - ey, p1y + ey]
        parts.append(convex_polygon(xs, ys, height, width))
    parts.append(disc(x0, y0, CAP_RADIUS, height, width))
    parts.append(disc(x1, y1, CAP_RADIUS, height, width))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def convex_polygon(xs: list[int], ys: list[int], height: int, width: int) -> Pixels:
    """The pixels of OpenCV's FillConvexPoly (8-connected) for corners in 16-bit fixed point: the sides,
    then the rows between the two sides walked down from the top corner."""
    sides = [segment(xs[i - 1], ys[i - 1], xs[i], ys[i], height, width) for i in range(len(xs))]
    return _joined(sides + [convex_fill(xs, ys, height, width)])


def convex_fill(xs: list[int], ys: list[int], height: int, width: int) -> Pixels:
    """The rows FillConvexPoly fills (corners in 16-bit fixed point), without the sides it draws first: each
    row between the two sides walked down from the top corner, their x rounded."""
    n = len(xs)
    top, bottom = (min(ys) + HALF) >> SHIFT, (max(ys) + HALF) >> SHIFT
    left, right = (min(xs) + HALF) >> SHIFT, (max(xs) + HALF) >> SHIFT
    if n < 3 or right < 0 or bottom < 0 or left >= width or top >= height:
        return NO_PIXELS
    bottom = min(bottom, height - 1)
    first = ys.index(min(ys))
    # each walker: [vertex index, step through the corners, x, dx per row, row it ends at, row its x is for]
    walkers = [[first, 1, -ONE, 0, top, top], [first, n - 1, -ONE, 0, top, top]]
    budget = n  # both walkers share one count of the sides they may take (FillConvexPoly's `edges`)
    y = top
    rows, lo, hi = [], [], []
    while True:
        for w in walkers:
            if y < w[4]:
                continue
            start, index = w[0], (w[0] + w[1]) % n
            while True:
                budget -= 1
                if budget < 0:
                    break
                end_row = (ys[index] + HALF) >> SHIFT
                if end_row > y:
                    span = end_row - y
                    w[:] = [index, w[1], xs[start], _c_div((xs[index] - xs[start]) * 2 + span, 2 * span),
                            end_row, y]
                    break
                start, index = index, (index + w[1]) % n
        if budget < 0:
            break
        stop = min(walkers[0][4], walkers[1][4], bottom + 1)
        block = np.arange(y, stop, dtype=np.int64)
        xa = walkers[0][2] + walkers[0][3] * (block - walkers[0][5])
        xb = walkers[1][2] + walkers[1][3] * (block - walkers[1][5])
        rows.append(block)
        lo.append((np.minimum(xa, xb) + HALF) >> SHIFT)
        hi.append((np.maximum(xa, xb) + HALF) >> SHIFT)
        if stop > bottom:
            break
        y = stop
    if not rows:
        return NO_PIXELS
    return _spans(np.concatenate(rows), np.concatenate(lo), np.concatenate(hi), height, width)


def segment(x1: int, y1: int, x2: int, y2: int, height: int, width: int) -> Pixels:
    """One polygon side as OpenCV's Line2 sets it: ends in 16-bit fixed point, clipped to the image, one
    pixel per step along the longer axis (the other coordinate stepped in fixed point and floored), and
    the far end rounded."""
    clipped = _clip_line(width << SHIFT, height << SHIFT, x1, y1, x2, y2)
    if clipped is None:
        return NO_PIXELS
    x1, y1, x2, y2 = clipped
    dx, dy = x2 - x1, y2 - y1
    if abs(dx) > abs(dy):
        if dx < 0:
            x1, y1, x2, y2, dy = x2, y2, x1, y1, -dy
        step = _c_div(dy << SHIFT, abs(dx) | 1)
        k = np.arange(((x2 - x1) >> SHIFT) + 1, dtype=np.int64)
        cols, rows = ((x1 + HALF) >> SHIFT) + k, (y1 + HALF + k * step) >> SHIFT
    else:
        if dy < 0:
            x1, y1, x2, y2, dx = x2, y2, x1, y1, -dx
        step = _c_div(dx << SHIFT, abs(dy) | 1)
        k = np.arange(((y2 - y1) >> SHIFT) + 1, dtype=np.int64)
        rows, cols = ((y1 + HALF) >> SHIFT) + k, (x1 + HALF + k * step) >> SHIFT
    rows = np.append(rows, (y2 + HALF) >> SHIFT)
    cols = np.append(cols, (x2 + HALF) >> SHIFT)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return rows[inside], cols[inside]


def disc(cx: int, cy: int, radius: int, height: int, width: int) -> Pixels:
    """The pixels of OpenCV's filled Circle (8-connected, integer centre), clipped to the image."""
    offsets, start, stop = _disc_rows(radius)
    return _spans(cy + offsets, cx + start, cx + stop, height, width)


def resize_linear(image: np.ndarray, height: int, width: int,
                  box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """cv2.resize(image, (width, height)) with INTER_LINEAR for a uint8 [H, W, C] image, bit for bit.

    `box` = (top, bottom, left, right), inclusive and possibly past the edges: the image is zero outside
    it (only output pixels whose sources touch it are computed); None: the image is all zero."""
    src_h, src_w, channels = image.shape
    out = np.zeros((height, width, channels), np.uint8)
    if (src_h, src_w) == (height, width):
        return image.copy()
    if box is None:
        return out
    top, bottom, left, right = max(box[0], 0), min(box[1], src_h - 1), max(box[2], 0), min(box[3], src_w - 1)
    if top > bottom or left > right:
        return out
    scale_x, scale_y = 1.0 / (width / src_w), 1.0 / (height / src_h)  # as resize.cpp: 1 / (dst / src)
    if abs(scale_x - round(scale_x)) < DBL_EPSILON and abs(scale_y - round(scale_y)) < DBL_EPSILON \
            and round(scale_x) == 2 and round(scale_y) == 2:
        return _halve(image)  # OpenCV turns an exact halving into its 2x2 area average
    r0, r1, b0, b1 = _taps(src_h, height, scale_y, clamp=False)
    c0, c1, a0, a1 = _taps(src_w, width, scale_x, clamp=True)
    out_rows = np.flatnonzero(((r0 >= top) & (r0 <= bottom)) | ((r1 >= top) & (r1 <= bottom)))
    out_cols = np.flatnonzero(((c0 >= left) & (c0 <= right)) | ((c1 >= left) & (c1 <= right)))
    if not (len(out_rows) and len(out_cols)):  # a strong downscale may sample no row or column of the box
        return out
    r0, r1, b0, b1 = r0[out_rows], r1[out_rows], b0[out_rows, None, None], b1[out_rows, None, None]
    c0, c1, a0, a1 = c0[out_cols], c1[out_cols], a0[None, out_cols, None], a1[None, out_cols, None]
    first = min(r0.min(), r1.min())
    source = image[first:max(r0.max(), r1.max()) + 1].astype(np.int32)
    across = source[:, c0] * a0 + source[:, c1] * a1  # the horizontal pass, exact in int32
    r0, r1 = r0 - first, r1 - first
    value = ((b0 * (across[r0] >> 4)) >> 16) + ((b1 * (across[r1] >> 4)) >> 16)
    out[out_rows[:, None], out_cols[None, :]] = ((value + 2) >> 2).astype(np.uint8)
    return out


def _taps(src: int, dst: int, scale: float, clamp: bool) -> tuple[np.ndarray, ...]:
    """Source indices and 11-bit weights of each output position along one axis (resize.cpp: the offset
    in double, cast to float, floored; weights (1-f)*2048 and f*2048 in float, rounded half to even).
    Columns (`clamp`) past either end take the end pixel whole; rows only clamp their indices."""
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    if clamp:
        low, high = i0 < 0, i0 >= src - 1
        f[low | high] = 0
        i0 = np.where(low, 0, np.where(high, src - 1, i0))
    w0 = np.rint((np.float32(1) - f) * np.float32(COEF_ONE)).astype(np.int32)
    w1 = np.rint(f * np.float32(COEF_ONE)).astype(np.int32)
    return np.clip(i0, 0, src - 1), np.clip(i0 + 1, 0, src - 1), w0, w1


def _halve(image: np.ndarray) -> np.ndarray:
    """OpenCV's area average for an exact 2x downscale of 8-bit pixels: (sum of the 2x2 block + 2) >> 2."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    block = image[:2 * h, :2 * w].astype(np.int32)
    total = block[0::2, 0::2] + block[0::2, 1::2] + block[1::2, 0::2] + block[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


@lru_cache(maxsize=None)
def _disc_rows(radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row offsets and column spans of OpenCV's filled midpoint circle around (0, 0)."""
    rows, start, stop = [], [], []
    err, dx, dy, plus, minus = 0, radius, 0, 1, 2 * radius - 1
    while dx >= dy:
        rows += [-dy, dy, -dx, dx]
        start += [-dx, -dx, -dy, -dy]
        stop += [dx, dx, dy, dy]
        dy += 1
        err += plus
        plus += 2
        if err > 0:  # step inwards
            err -= minus
            dx -= 1
            minus -= 2
    return np.array(rows, np.int64), np.array(start, np.int64), np.array(stop, np.int64)


def _spans(rows: np.ndarray, first: np.ndarray, last: np.ndarray, height: int, width: int) -> Pixels:
    """Every pixel of the row spans first..last (inclusive), each clipped to the image."""
    keep = (rows >= 0) & (rows < height) & (last >= 0) & (first < width)
    rows, first, last = rows[keep], np.maximum(first[keep], 0), np.minimum(last[keep], width - 1)
    counts = np.maximum(last - first + 1, 0)
    total = int(counts.sum())
    if total == 0:
        return NO_PIXELS
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(rows, counts), np.repeat(first, counts) + (np.arange(total) - starts)


def _joined(parts: list[Pixels]) -> Pixels:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _clip_line(width: int, height: int, x1: int, y1: int, x2: int, y2: int) -> tuple[int, int, int, int] | None:
    """OpenCV's clipLine on a width x height plane (the ends moved onto the border along the line, the
    intersections computed in double and truncated toward zero); None when the line misses the plane.
    The order matters: the second end is moved along the line the first one's move already changed."""
    right, bottom = width - 1, height - 1
    c1 = (x1 < 0) + (x1 > right) * 2 + (y1 < 0) * 4 + (y1 > bottom) * 8
    c2 = (x2 < 0) + (x2 > right) * 2 + (y2 < 0) * 4 + (y2 > bottom) * 8
    if (c1 & c2) == 0 and (c1 | c2) != 0:
        if c1 & 12:
            a = 0 if c1 < 8 else bottom
            x1 += int(float(a - y1) * (x2 - x1) / (y2 - y1))
            y1 = a
            c1 = (x1 < 0) + (x1 > right) * 2
        if c2 & 12:
            a = 0 if c2 < 8 else bottom
            x2 += int(float(a - y2) * (x2 - x1) / (y2 - y1))
            y2 = a
            c2 = (x2 < 0) + (x2 > right) * 2
        if (c1 & c2) == 0 and (c1 | c2) != 0:
            if c1:
                a = 0 if c1 == 1 else right
                y1 += int(float(a - x1) * (y2 - y1) / (x2 - x1))
                x1, c1 = a, 0
            if c2:
                a = 0 if c2 == 1 else right
                y2 += int(float(a - x2) * (y2 - y1) / (x2 - x1))
                x2, c2 = a, 0
    return (x1, y1, x2, y2) if (c1 | c2) == 0 else None


def _c_div(a: int, b: int) -> int:
    """C's integer division (toward zero) for b > 0."""
    return -((-a) // b) if a < 0 else a // b


def _to_int(values: np.ndarray) -> np.ndarray:
    """Python's int() of each value (toward zero), kept inside int32 as OpenCV's points are."""
    return np.trunc(np.clip(values, -(2 ** 31), 2 ** 31 - 1)).astype(np.int64)


def _checked(hands: np.ndarray, scores: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    hands, scores = np.asarray(hands), np.asarray(scores)
    if hands.ndim != 3 or hands.shape[1:] != (JOINTS, 2):
        raise ValueError(f"hands must be [N, {JOINTS}, 2] (x, y) points; got shape {tuple(hands.shape)}")
    if scores.shape != hands.shape[:2]:
        raise ValueError(f"scores must be [N, {JOINTS}] for {len(hands)} hands; got shape {tuple(scores.shape)}")
    if height < 1 or width < 1:
        raise ValueError(f"the pose image must be at least 1x1; got {height}x{width}")
    # integer input is promoted as Python would; float32 stays float32 as in the reference's arithmetic
    hands = hands if np.issubdtype(hands.dtype, np.floating) else hands.astype(np.float64)
    scores = scores if np.issubdtype(scores.dtype, np.floating) else scores.astype(np.float64)
    if not (np.isfinite(hands).all() and np.isfinite(scores).all()):
        raise ValueError("hand points and scores must be finite numbers")
    return hands, scores
