"""DWPose on onnxruntime (emo_pipeline/poses/dwpose.py) against answers worked out on paper from tiny models
whose outputs are planted (tests/tiny_dwpose.py): where each box and keypoint must land in the frame, the
neck, OpenPose's order, nobody found, two people; OpenCV's resampling against plain float bilinear; and the
refusals of wrong model files and frames. Parity with the reference's own code is benchmarks/dwpose_side_by_side.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiny_dwpose as tiny
from emo_pipeline.download.checks import PartDamaged, Unit, check
from emo_pipeline.poses.dwpose import (DETECTOR_FILE, ESTIMATOR_FILE, FOLDER, DWPose, WholeBody, letterbox,
                                       resize_linear, warp_affine_linear)
from emo_pipeline.poses.sequence import PoseError

FRAME = (240, 320)  # height, width: letterboxed at ratio 2 (640x480 over grey)
PERSON = tiny.Planted(32, 9, 6, log_w=math.log(4), log_h=math.log(8), objectness=0.9, classes={0: 0.95})
DUPLICATE = tiny.Planted(16, 19, 13, dx=0.25, dy=0.1, log_w=math.log(8), log_h=math.log(15), objectness=0.8,
                         classes={0: 0.9})  # most of PERSON's box, lower score: NMS removes it
FAINT = tiny.Planted(8, 5, 50, log_w=math.log(5), log_h=math.log(5), objectness=0.5, classes={0: 0.5})  # 0.25
NOT_A_PERSON = tiny.Planted(16, 30, 5, log_w=math.log(3), log_h=math.log(3), objectness=0.95,
                            classes={0: 0.05, 1: 0.99})  # a bicycle
SECOND = tiny.Planted(16, 4, 6, log_w=math.log(4), log_h=math.log(9), objectness=0.7, classes={0: 0.8})

COCO_BODY = ["nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
             "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle"]
OPENPOSE_BODY = ["nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
                 "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear"]
L_SHOULDER, R_SHOULDER = COCO_BODY.index("l_shoulder"), COCO_BODY.index("r_shoulder")


def planted_keypoints(width: int, height: int, seed: int = 0, unplanted: tuple[int, ...] = ()):
    """Distinct bins for all 133 points and peak heights (x and y differ, the lower one either way round)."""
    rng = np.random.default_rng(seed)
    bins = np.stack([rng.integers(0, 2 * width, 133), rng.integers(0, 2 * height, 133)], axis=-1)
    low = rng.uniform(0.35, 0.95, 133)
    peaks = np.where(rng.random(133)[:, None] < 0.5, np.stack([low, low + 0.2], -1), np.stack([low + 0.2, low], -1))
    peaks[list(unplanted)] = 0
    return bins, peaks.astype(np.float32)


def crop_of(box, width: int, height: int):
    """Centre and size of the estimator's crop of a box, written from the reference's description: padded by
    1.25, then the short side grown to the estimator's aspect ratio."""
    x0, y0, x1, y1 = box
    w, h = (x1 - x0) * 1.25, (y1 - y0) * 1.25
    if w / h > width / height:
        h = w * height / width
    else:
        w = h * width / height
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array([w, h])


def in_frame(bins_xy, box, width: int, height: int) -> np.ndarray:
    """Where SimCC bins land in the frame: half a bin per crop pixel, the crop's pixels spread over its box."""
    centre, size = crop_of(box, width, height)
    return centre + (np.asarray(bins_xy, np.float64) / 2 / [width, height] - 0.5) * size


def openpose_expected(mmpose: np.ndarray) -> np.ndarray:
    """133 MMPose rows → 134 OpenPose rows by joint name, the neck row left as NaN (tested on its own)."""
    body = [mmpose[COCO_BODY.index(name)] if name != "neck" else np.full(mmpose.shape[1:], np.nan)
            for name in OPENPOSE_BODY]
    return np.concatenate([np.stack(body), mmpose[17:]])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("dwpose")


def models(folder, name: str, planted: list[tiny.Planted], **estimator) -> tuple:
    detector = tiny.write_detector(folder / f"{name}_det.onnx", planted)
    return detector, tiny.write_estimator(folder / f"{name}_est.onnx", **estimator)


def frame(height: int, width: int, colour=(40, 40, 40)) -> np.ndarray:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    return image


# ---------------------------------------------------------------------------- detection
def test_the_person_is_kept_and_the_duplicate_the_faint_box_and_the_bicycle_are_dropped(folder):
    detector, estimator = models(folder, "four", [PERSON, DUPLICATE, FAINT, NOT_A_PERSON])
    boxes = DWPose(detector, estimator).detect(frame(*FRAME))
    np.testing.assert_allclose(boxes, [PERSON.box() / 2], atol=1e-4)  # letterboxed at ratio 2
    assert DUPLICATE.person_score() > 0.3 and FAINT.person_score() > 0.1 and NOT_A_PERSON.objectness > 0.3


def test_without_nms_the_duplicate_would_stay(folder):
    """The duplicate is a person over 0.3 on its own: it is NMS, not a threshold, that removes it."""
    detector, estimator = models(folder, "duplicate", [DUPLICATE, FAINT])
    boxes = DWPose(detector, estimator).detect(frame(*FRAME))
    np.testing.assert_allclose(boxes, [DUPLICATE.box() / 2], atol=1e-4)


def test_the_letterbox_keeps_the_channel_order_and_pads_with_grey():
    image = frame(160, 320, (200, 90, 30))  # ratio 2: 640x320, grey below
    tensor, ratio = letterbox(image)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32 and ratio == 2.0
    assert [tensor[0, c, :320].min() for c in range(3)] == [200, 90, 30]
    assert [tensor[0, c, :320].max() for c in range(3)] == [200, 90, 30]
    assert (tensor[0, :, 320:] == 114).all()


def test_half_size_frames_are_averaged_two_by_two():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)  # 1280x720 → 640x360: OpenCV's area path
    tensor, ratio = letterbox(image)
    blocks = image.reshape(360, 2, 640, 2, 3).astype(np.int64).sum(axis=(1, 3))
    assert ratio == 0.5
    np.testing.assert_array_equal(tensor[0].transpose(1, 2, 0)[:360], (blocks + 2) // 4)


# ---------------------------------------------------------------------------- OpenCV's resampling
def float_bilinear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    x = torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("size", [(37, 53, 64, 48), (200, 120, 71, 90), (90, 91, 90, 91), (64, 64, 640, 320)])
def test_resize_is_bilinear_within_one_level(size):
    h, w, height, width = size
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ours = resize_linear(image, width, height)
    assert ours.shape == (height, width, 3) and ours.dtype == np.uint8
    assert np.abs(ours - float_bilinear(image, width, height)).max() <= 1.0
    if (h, w) == (height, width):
        np.testing.assert_array_equal(ours, image)


def test_the_warp_shifts_by_whole_and_half_pixels_with_a_black_border():
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    same = warp_affine_linear(image, np.array([[1.0, 0, 0], [0, 1, 0]]), 30, 20)
    np.testing.assert_array_equal(same, image)
    shifted = warp_affine_linear(image, np.array([[1.0, 0, 3], [0, 1, -2]]), 30, 20)  # source (x, y) → (x+3, y-2)
    np.testing.assert_array_equal(shifted[:18, 3:], image[2:, :27])
    assert (shifted[:, :3] == 0).all() and (shifted[18:] == 0).all()
    half = warp_affine_linear(image, np.array([[1.0, 0, -0.5], [0, 1, 0]]), 29, 20)  # between two columns
    mean = (image[:, :-1].astype(np.float64) + image[:, 1:]) / 2
    assert np.abs(half - mean).max() <= 0.5


# ---------------------------------------------------------------------------- keypoints
@pytest.mark.parametrize("width, height", [(48, 64), (64, 48)])
def test_planted_keypoints_land_where_worked_out_in_openpose_order(folder, width, height):
    """The estimator's input size is read from the model (either aspect), every point's bin is planted; points
    with no peak (all 0) are put at bin -1 as the reference does."""
    unplanted = (40, 100)
    bins, peaks = planted_keypoints(width, height, unplanted=unplanted)
    detector, estimator = models(folder, f"planted{width}", [PERSON, DUPLICATE, FAINT, NOT_A_PERSON],
                                 width=width, height=height, bins=bins, peaks=peaks)
    found = DWPose(detector, estimator)(frame(*FRAME))
    assert isinstance(found, WholeBody) and found.keypoints.shape == (1, 134, 2) and found.scores.shape == (1, 134)
    assert found.keypoints.dtype == np.float32 and found.scores.dtype == np.float32
    bins = bins.astype(np.float64)
    bins[list(unplanted)] = -1
    expected = openpose_expected(in_frame(bins, PERSON.box() / 2, width, height))
    scores = openpose_expected(peaks.min(axis=1)[:, None])[:, 0]
    named = ~np.isnan(scores)
    np.testing.assert_allclose(found.keypoints[0][named], expected[named], atol=1e-3)
    np.testing.assert_allclose(found.scores[0][named], scores[named], rtol=1e-6)
    assert found.scores[0][18 + 40 - 17] == 0 and found.scores[0][18 + 100 - 17] == 0  # the unplanted two


@pytest.mark.parametrize("right_shoulder, seen", [(0.8, 1.0), (0.25, 0.0), (0.3, 1.0)])
def test_the_neck_is_midway_between_the_shoulders_and_seen_only_when_both_score_over_0_3(folder, right_shoulder,
                                                                                          seen):
    """0.3 as a float32 score is 0.30000001: over 0.3, as the reference compares the scores in float64."""
    bins, peaks = planted_keypoints(48, 64, seed=1)
    peaks[L_SHOULDER] = (0.9, 0.7)
    peaks[R_SHOULDER] = (right_shoulder, 0.95)  # the score is the lower peak
    detector, estimator = models(folder, f"neck{right_shoulder}", [PERSON], bins=bins, peaks=peaks)
    found = DWPose(detector, estimator)(frame(*FRAME))
    shoulders = in_frame(bins[[L_SHOULDER, R_SHOULDER]], PERSON.box() / 2, 48, 64)
    np.testing.assert_allclose(found.keypoints[0, 1], shoulders.mean(axis=0), atol=1e-3)
    assert found.scores[0, 1] == seen
    np.testing.assert_allclose(found.scores[0, [5, 2]], [0.7, right_shoulder], rtol=1e-6)


@pytest.mark.parametrize("height, width", [(240, 320), (720, 1280), (500, 333)])
def test_a_keypoint_following_a_red_dot_lands_on_it_within_a_pixel(folder, height, width):
    """Through the letterbox ratio, the crop, the warp and the normalisation: the followed keypoints (a wrist
    and a hand point) take the first reddest column and row of the crop, at most a pixel before the 3x3 dot's
    centre (the crop is 0.4 to 1.7 frame pixels a pixel here). A blue dot would win if the channels were
    swapped. The real estimator's 288x384."""
    detector, estimator = models(folder, "dot", [PERSON], width=288, height=384, follow=(10, 100))
    ratio = min(640 / height, 640 / width)
    box = PERSON.box() / ratio
    centre, _ = crop_of(box, 288, 384)
    image = frame(height, width)
    red = np.round(centre + [0.2, -0.3] * (box[2:] - box[:2])).astype(int)
    blue = np.round(centre + [-0.25, 0.2] * (box[2:] - box[:2])).astype(int)
    image[red[1] - 1:red[1] + 2, red[0] - 1:red[0] + 2] = (255, 0, 0)
    image[blue[1] - 1:blue[1] + 2, blue[0] - 1:blue[0] + 2] = (0, 0, 255)
    found = DWPose(detector, estimator)(image)
    right_wrist, hand_point = OPENPOSE_BODY.index("r_wrist"), 18 + 100 - 17
    for index in (right_wrist, hand_point):
        offset = red - found.keypoints[0, index]
        assert (offset >= -1e-3).all() and (offset <= 1 + 1e-3).all(), (found.keypoints[0, index], red)
        assert found.scores[0, index] == np.float32((255 - 123.675) / 58.395)  # the dot's full red, normalised


def test_the_crop_is_normalised_per_channel_in_the_order_given(folder):
    """A uniform frame: the followed point scores the normalised channel exactly; on the blue channel that
    is below 0, so the point goes to bin -1 (half a crop pixel left of and above the crop's corner)."""
    image = frame(*FRAME, colour=(200, 90, 30))
    for channel, value in ((0, (200 - 123.675) / 58.395), (2, (30 - 103.53) / 57.375)):
        detector, estimator = models(folder, f"uniform{channel}", [PERSON], follow=(0,), channel=channel)
        found = DWPose(detector, estimator)(image)
        assert found.scores[0, 0] == np.float32(value)
    np.testing.assert_allclose(found.keypoints[0, 0], in_frame([-1, -1], PERSON.box() / 2, 48, 64), atol=1e-3)


def test_two_people_best_first_each_in_its_own_crop(folder):
    bins, peaks = planted_keypoints(48, 64, seed=2)
    detector, estimator = models(folder, "two", [SECOND, PERSON, FAINT], bins=bins, peaks=peaks)
    found = DWPose(detector, estimator)(frame(*FRAME))
    assert found.keypoints.shape == (2, 134, 2)
    for person, planted in enumerate((PERSON, SECOND)):  # PERSON scores 0.855, SECOND 0.56
        expected = openpose_expected(in_frame(bins, planted.box() / 2, 48, 64))
        named = ~np.isnan(expected[:, 0])
        np.testing.assert_allclose(found.keypoints[person][named], expected[named], atol=1e-3)
    np.testing.assert_array_equal(found.scores[0], found.scores[1])  # the same planted peaks


def test_nobody_found_estimates_the_whole_frame_as_the_reference_does_or_nobody(folder):
    bins, peaks = planted_keypoints(48, 64, seed=3)
    detector, estimator = models(folder, "nobody", [FAINT, NOT_A_PERSON], bins=bins, peaks=peaks)
    height, width = FRAME
    found = DWPose(detector, estimator)(frame(*FRAME))
    expected = openpose_expected(in_frame(bins, [0, 0, width, height], 48, 64))
    named = ~np.isnan(expected[:, 0])
    np.testing.assert_allclose(found.keypoints[0][named], expected[named], atol=1e-3)
    nobody = DWPose(detector, estimator, whole_frame_if_none=False)(frame(*FRAME))
    assert nobody.keypoints.shape == (0, 134, 2) and nobody.scores.shape == (0, 134)
    assert nobody.keypoints.dtype == np.float32 and nobody.scores.dtype == np.float32


# ---------------------------------------------------------------------------- refusals
REAL_DETECTOR = ([[1, 3, 640, 640]], [[1, 8400, 85]])
REAL_ESTIMATOR = ([[1, 3, 384, 288]], [[1, 133, 576], [1, 133, 768]])
WRONG_DETECTORS = {
    "a 416 input": ([[1, 3, 416, 416]], [[1, 3549, 85]]),
    "six columns": ([[1, 3, 640, 640]], [[1, 8400, 6]]),
    "two outputs": ([[1, 3, 640, 640]], [[1, 8400, 85], [1, 8400, 85]]),
}
WRONG_ESTIMATORS = {
    "one output": ([[1, 3, 384, 288]], [[1, 133, 576]]),
    "17 keypoints": ([[1, 3, 384, 288]], [[1, 17, 576], [1, 17, 768]]),
    "x and y swapped": ([[1, 3, 384, 288]], [[1, 133, 768], [1, 133, 576]]),
    "a free input size": ([[1, 3, None, None]], [[1, 133, None], [1, 133, None]]),
}


def place(folder, name: str, kind: str, writer) -> tuple[Unit, object]:
    root = folder / name
    target = f"{FOLDER}/{DETECTOR_FILE if kind == 'dwpose_detector' else ESTIMATOR_FILE}"
    writer(root / target)
    return Unit(kind, target, (target,)), root


def test_the_check_kinds_take_models_of_the_real_shapes(folder):
    for kind, writer in (("dwpose_detector", tiny.write_random_detector),
                         ("dwpose_estimator", tiny.write_random_estimator),
                         ("dwpose_estimator", lambda p: tiny.write_shaped(p, [[None, 3, 384, 288]],
                                                                          [[None, 133, 576], [None, 133, 768]]))):
        check(*place(folder, f"good_{kind}", kind, writer))


@pytest.mark.parametrize("kind, name, shapes", [("dwpose_detector", n, s) for n, s in WRONG_DETECTORS.items()]
                         + [("dwpose_estimator", n, s) for n, s in WRONG_ESTIMATORS.items()]
                         + [("dwpose_detector", "the estimator", REAL_ESTIMATOR),
                            ("dwpose_estimator", "the detector", REAL_DETECTOR)])
def test_models_of_the_wrong_kind_are_refused_by_the_checks_and_by_dwpose(folder, kind, name, shapes):
    unit, root = place(folder, f"{kind}_{name}", kind, lambda p: tiny.write_shaped(p, *shapes))
    what = "YOLOX person detector" if kind == "dwpose_detector" else "whole-body estimator"
    with pytest.raises(PartDamaged, match=f"not DWPose's {what}: inputs .* \\(expected one "):
        check(unit, root)
    good_detector, good_estimator = models(folder, "good", [PERSON])
    pair = (root / unit.path, good_estimator) if kind == "dwpose_detector" else (good_detector, root / unit.path)
    with pytest.raises(PoseError, match=f"is not DWPose's {what}"):
        DWPose(*pair)


def test_a_damaged_or_missing_file_is_said_plainly(folder):
    damaged = folder / "damaged" / FOLDER / DETECTOR_FILE
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x08\x07not a protobuf at all" * 50)
    with pytest.raises(PartDamaged, match="not a readable ONNX model"):
        check(Unit("dwpose_detector", f"{FOLDER}/{DETECTOR_FILE}", ()), folder / "damaged")
    _, estimator = models(folder, "good", [PERSON])
    with pytest.raises(PoseError, match=f"{DETECTOR_FILE} is not a readable ONNX model"):
        DWPose(damaged, estimator)
    with pytest.raises(PoseError, match=f"is missing: DWPose's YOLOX person detector .* emo/{FOLDER}/"):
        DWPose(folder / "nowhere" / DETECTOR_FILE, estimator)


@pytest.mark.parametrize("image, said", [
    (np.zeros((40, 30, 3), np.float32), "not float32 \\[40, 30, 3\\]"),
    (np.zeros((40, 30), np.uint8), "not uint8 \\[40, 30\\]"),
    (np.zeros((40, 30, 4), np.uint8), "not uint8 \\[40, 30, 4\\]"),
    ([[0, 0, 0]], "not list"),
    (np.zeros((0, 30, 3), np.uint8), "an empty frame"),
    (np.zeros((2, 2000, 3), np.uint8), "too narrow"),
])
def test_frames_that_are_not_rgb_bytes_are_refused(folder, image, said):
    detector, estimator = models(folder, "good", [PERSON])
    with pytest.raises(PoseError, match=said):
        DWPose(detector, estimator)(image)
