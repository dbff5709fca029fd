"""EchoMimic v2's hand-pose image (emo_pipeline/poses/draw.py) against small models of OpenCV's drawing
rules worked out by hand, stated in each test; no OpenCV and no reference files. The whole renderer is
held against OpenCV itself by benchmarks/echomimic_v2_pose_drawing.py (every demo frame, 0 pixels apart)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

from emo_pipeline.poses.draw import (BONES, canvas_size, disc, draw_hands, paste_pose, resize_linear,
                                     thick_line)


def as_set(pixels) -> set[tuple[int, int]]:
    rows, cols = pixels
    return set(zip(rows.tolist(), cols.tolist()))


def rows_model(spans: dict[int, tuple[int, int]]) -> set[tuple[int, int]]:
    """(row, col) of every pixel of the inclusive column spans, row by row."""
    return {(y, x) for y, (a, b) in spans.items() for x in range(a, b + 1)}


def disc_model(cx: int, cy: int, radius: int = 4) -> set[tuple[int, int]]:
    """OpenCV's filled midpoint circle of radius 4: rows 0..4 away from the centre reach 4, 3, 3, 2, 0
    columns either side (the midpoint walk: (4,0), (3,1), (3,2), and (2,3) from the octant swap)."""
    assert radius == 4
    reach = {0: 4, 1: 3, 2: 3, 3: 2, 4: 0}
    return {(cy + sign * dy, cx + dx) for dy, r in reach.items() for sign in (1, -1) for dx in range(-r, r + 1)}


def horizontal_model(x0: int, x1: int, y: int) -> set[tuple[int, int]]:
    """A thickness-2 line between integer points on one row: the quadrilateral around it has corners one
    pixel above and below each end, so rows y-1..y+1 are filled from x0 to x1; the radius-1 caps (plus
    signs) add one pixel beyond each end on the middle row."""
    return rows_model({y - 1: (x0, x1), y: (x0 - 1, x1 + 1), y + 1: (x0, x1)})


def diagonal_model(a: int, b: int) -> set[tuple[int, int]]:
    """A thickness-2 line from (a, a) to (b, b): the corners sit (0.71, -0.71) off each end (46341/65536
    rounded), the fill walks down from the top corner and a walker's x starts at its corner, 0.71 rows
    above the first row it covers, so the band of +-1.41 columns widens to +-1.71 and rounds to +-2; the
    first and last rows hold the corner's pixel and a cap pixel."""
    spans = {a - 1: (a, a + 1), a: (a - 1, a + 2), b: (b - 2, b + 1), b + 1: (b - 1, b)}
    spans.update({y: (y - 2, y + 2) for y in range(a + 1, b)})
    return rows_model(spans)


def test_a_horizontal_and_a_vertical_line():
    assert as_set(thick_line(10, 20, 30, 20, 64, 64)) == horizontal_model(10, 30, 20)
    assert as_set(thick_line(30, 20, 10, 20, 64, 64)) == horizontal_model(10, 30, 20)  # either direction
    vertical = {(x, y) for y, x in horizontal_model(10, 30, 20)}  # the same shape turned a quarter
    assert as_set(thick_line(20, 10, 20, 30, 64, 64)) == vertical


def test_a_diagonal_and_an_anti_diagonal_line():
    assert as_set(thick_line(5, 5, 15, 15, 32, 32)) == diagonal_model(5, 5 + 10)
    mirrored = {(y, 20 - x) for y, x in diagonal_model(5, 15)}  # x -> 20 - x maps (5,5)-(15,15) to (15,5)-(5,15)
    assert as_set(thick_line(15, 5, 5, 15, 32, 32)) == mirrored


def test_a_line_at_any_slope_stays_in_its_band():
    """The quadrilateral reaches one pixel either side of the segment; rounding its corners and each row's
    ends (half a pixel) and a walker starting at its corner's x (up to 0.71 rows early) keep every pixel
    set within 1.7 of the segment, and leave none within 1.15 of it unset (OpenCV itself, on 3,000 random
    lines: 1.68 and 1.19)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:40, 0:40].astype(float)
    for x0, y0, x1, y1 in rng.integers(4, 36, (150, 4)).tolist():
        lit = np.zeros((40, 40), bool)
        lit[thick_line(x0, y0, x1, y1, 40, 40)] = True
        vx, vy = x1 - x0, y1 - y0
        t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / max(vx * vx + vy * vy, 1), 0, 1)
        distance = np.hypot(xx - x0 - t * vx, yy - y0 - t * vy)
        assert distance[lit].max() <= 1.7 and distance[~lit].min() > 1.15, (x0, y0, x1, y1)


def test_a_line_of_no_length_is_its_caps_and_a_joint_is_the_radius_4_disc():
    assert as_set(thick_line(7, 9, 7, 9, 20, 20)) == {(9, 6), (9, 7), (9, 8), (8, 7), (10, 7)}
    assert as_set(disc(10, 12, 4, 30, 30)) == disc_model(10, 12)
    assert as_set(disc(1, 2, 4, 30, 30)) == {(y, x) for y, x in disc_model(1, 2) if y >= 0 and x >= 0}  # clipped


def test_a_line_leaving_the_canvas_under_either_rule():
    """OpenCV 4.10 builds the quadrilateral from the given ends and clips each row; 5.1 first clips the
    integer ends to the image widened by 2 (clipLine, the intersection truncated toward zero): (50, 30) to
    (90, 40) on a 70-wide image ends at x = 71, y = 40 + trunc((71 - 90) * 10 / 40) = 36."""
    old, new = as_set(thick_line(50, 30, 90, 40, 60, 70)), as_set(thick_line(50, 30, 90, 40, 60, 70, clip=True))
    assert new == as_set(thick_line(50, 30, 71, 36, 60, 70))
    assert old != new and max(x for _, x in old | new) == 69
    flat = horizontal_model(50, 69, 30) - {(30, 70)}  # a horizontal line is the same under both rules
    assert as_set(thick_line(50, 30, 95, 30, 60, 70)) == as_set(thick_line(50, 30, 95, 30, 60, 70, clip=True)) == flat


def hand(points: dict[int, tuple[int, int]], size: int) -> np.ndarray:
    """One hand [21, 2] normalised to a size x size frame: the given joints at those pixels, the rest at 0
    (which the reference skips)."""
    out = np.zeros((21, 2))
    for joint, (x, y) in points.items():
        out[joint] = (x / size, y / size)
    return out


def test_joints_are_red_and_bones_take_their_hue_times_the_two_scores():
    """A 64x64 frame drawn on a 64-pixel canvas: no resize. Bone 1 joins joints 1 and 2 (hue 1/20); its
    colour is hsv(1/20, 1, 1) * int(0.9 * 0.9 * 255) = (206, 61.8, 0) rounded, written into a BGR canvas, so
    the RGB result is (0, 62, 206); joint 1 (score 0.9) is (int(229.5), 0, 0) = (229, 0, 0)."""
    size = 64
    scores = np.full((1, 21), 0.9)
    image = draw_hands(hand({1: (10, 20), 2: (40, 20)}, size)[None], scores, size, size, short_side=size)
    assert image.dtype == np.uint8 and image.shape == (size, size, 3)
    level = int(0.9 * 0.9 * 255)
    rgb = colorsys.hsv_to_rgb(1 / 20, 1.0, 1.0)
    bone = tuple(min(round(c * level), 255) for c in rgb)[::-1]
    joints = disc_model(10, 20) | disc_model(40, 20)
    lit = {tuple(p) for p in np.argwhere(image.any(-1)).tolist()}
    assert lit == horizontal_model(10, 40, 20) | joints
    for y, x in lit:
        assert tuple(image[y, x]) == ((229, 0, 0) if (y, x) in joints else bone)
    assert bone == (0, 62, 206)


def test_points_at_pixel_zero_are_skipped_with_their_bones():
    size = 64
    points = hand({0: (32, 32), 1: (0, 40), 5: (40, 0), 9: (1, 1)}, size)  # x or y at pixel 0: skipped
    points[13] = (0.4 / size, 30 / size)  # int(0.4) = 0: skipped as well
    image = draw_hands(points[None], np.ones((1, 21)), size, size, short_side=size)
    lit = {tuple(p) for p in np.argwhere(image.any(-1)).tolist()}
    bone_0_9 = diagonal_model(1, 32)  # bone 8 joins joints 0 and 9, both shown (drawn from (32, 32) to (1, 1))
    assert lit == disc_model(32, 32) | bone_0_9 | {(y, x) for y, x in disc_model(1, 1) if y >= 0 and x >= 0}
    assert tuple(image[1, 1]) == (255, 0, 0)


def test_scores_over_one_saturate_and_the_later_hand_is_drawn_over_the_earlier():
    size = 64
    hands = np.stack([hand({0: (20, 20)}, size), hand({0: (20, 20), 3: (44, 44)}, size)])
    scores = np.stack([np.full(21, 0.5), np.full(21, 1.3)])
    image = draw_hands(hands, scores, size, size, short_side=size)
    assert tuple(image[20, 20]) == (255, 0, 0)  # hand 1's int(1.3 * 255) = 331, saturated, over hand 0's 127
    scores = scores[::-1].copy()
    image = draw_hands(hands, scores, size, size, short_side=size)
    assert tuple(image[20, 20]) == (127, 0, 0) and tuple(image[44, 44]) == (127, 0, 0)
    bone_colour = draw_hands(hand({0: (10, 30), 1: (50, 30)}, size)[None], np.full((1, 21), 1.3), size, size,
                             short_side=size)[29, 30]
    assert tuple(bone_colour) == (0, 0, 255)  # bone 0 is hue 0: (int(1.69 * 255), 0, 0) = (430, 0, 0) -> 255


def test_the_canvas_has_a_short_side_of_800_and_is_resized_to_the_frame():
    assert canvas_size(768, 768) == (800, 800)
    assert canvas_size(768, 500) == (1228, 800)  # 768 * 800 / 500 = 1228.8, truncated
    assert canvas_size(500, 768) == (800, 1228)
    assert canvas_size(800, 1000) == (800, 1000)  # already 800: drawn at its own size
    points = hand({0: (250, 380), 1: (300, 380)}, 500)[None] * [500 / 500, 500 / 768]  # normalised to 500 x 768
    image = draw_hands(points, np.ones((1, 21)), 768, 500)
    assert image.shape == (768, 500, 3) and image.dtype == np.uint8
    assert image[380, 250, 0] > 200 and image[380, 250, 1:].max() == 0  # the joint, still red after the resize
    assert not image[:300].any() and not image[460:].any()
    empty = draw_hands(np.zeros((0, 21, 2)), np.zeros((0, 21)), 40, 30)
    assert empty.shape == (40, 30, 3) and not empty.any()


def test_the_resize_is_bilinear_within_one_level():
    """OpenCV's fixed-point bilinear (11-bit weights) lies within one level of the exact bilinear
    interpolation with half-pixel centres and clamped edges; an exact halving is the 2x2 mean rounded half
    up; the same size is a copy."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (23, 17, 3)).astype(np.uint8)
    for height, width in ((9, 31), (40, 12), (23, 5)):
        out = resize_linear(image, height, width, (0, 22, 0, 16)).astype(float)

        def taps(src, dst):
            f = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
            i0 = np.floor(f).astype(int)
            return i0, np.minimum(i0 + 1, src - 1), f - i0
        y0, y1, fy = taps(23, height)
        x0, x1, fx = taps(17, width)
        im, fy, fx = image.astype(float), fy[:, None, None], fx[None, :, None]
        exact = (1 - fy) * ((1 - fx) * im[y0][:, x0] + fx * im[y0][:, x1]) + fy * ((1 - fx) * im[y1][:, x0]
                                                                                   + fx * im[y1][:, x1])
        assert out.shape == (height, width, 3) and np.abs(out - exact).max() < 1
    even = image[:22, :16]
    half = resize_linear(even, 11, 8, (0, 21, 0, 15)).astype(int)
    blocks = even.astype(int).reshape(11, 2, 8, 2, 3).sum((1, 3))
    assert np.array_equal(half, (blocks + 2) >> 2)
    assert np.array_equal(resize_linear(image, 23, 17, (0, 22, 0, 16)), image)
    assert not resize_linear(image, 9, 31, None).any()  # no box: nothing was drawn


def test_bad_hands_are_refused():
    with pytest.raises(ValueError, match=r"\[N, 21, 2\]"):
        draw_hands(np.zeros((2, 20, 2)), np.zeros((2, 20)), 64, 64)
    with pytest.raises(ValueError, match="scores"):
        draw_hands(np.zeros((2, 21, 2)), np.zeros((1, 21)), 64, 64)
    with pytest.raises(ValueError, match="finite"):
        draw_hands(np.full((1, 21, 2), np.nan), np.ones((1, 21)), 64, 64)
    assert len(BONES) == 20


def test_paste_pose_places_the_drawing_in_a_black_frame():
    drawn = np.full((4, 6, 3), 7, np.uint8)
    frame = paste_pose(drawn, (2, 6, 1, 7), 10)
    assert frame.shape == (10, 10, 3) and frame.dtype == np.uint8
    assert (frame[2:6, 1:7] == 7).all() and frame.sum() == drawn.sum()
    square = np.ones((8, 8, 3), np.uint8)
    assert np.array_equal(paste_pose(square, (0, 8, 0, 8), 8), square)
    with pytest.raises(ValueError, match="inside a 10x10 frame"):
        paste_pose(drawn, (8, 12, 1, 7), 10)
    with pytest.raises(ValueError, match=r"needs uint8 \(4, 5, 3\)"):
        paste_pose(drawn, (2, 6, 1, 6), 10)
    with pytest.raises(ValueError, match="uint8"):
        paste_pose(drawn.astype(np.float32), (2, 6, 1, 7), 10)
