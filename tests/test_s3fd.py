"""S3FD and the face tracks SyncNet scores (emo_pipeline/metrics/s3fd.py, face_tracks.py): the network's keys
against syncnet_python's own (tests/data/s3fd_keys.tsv, written by tests/make_s3fd_keys.py), weights-only
loading, the prior boxes, decoding and both NMS against computations written out here, the scaled input
(OpenCV's fx path), planted detections through detect_faces, tracking (gaps interpolated, short tracks and
small faces dropped), crops of a known region, and plain errors. benchmarks/s3fd_side_by_side.py runs
syncnet_python's own code beside ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from emo_pipeline.io.loading import CheckpointError
from emo_pipeline.metrics import face_tracks as ft
from emo_pipeline.metrics.s3fd import (S3FD, S3FDNet, decode, detect, load_s3fd, network_input, nms, nms_numpy,
                                       prior_boxes)

KEYS = Path(__file__).parent / "data" / "s3fd_keys.tsv"


def read_keys() -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in KEYS.read_text().splitlines():
        if line and not line.startswith("#"):
            _, key, shape = line.split("\t")
            keys[key] = tuple(int(s) for s in shape.split(",") if s)
    return keys


def test_network_has_every_key_and_shape_of_syncnet_pythons_s3fd():
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in S3FDNet().state_dict().items()}
    assert ours == read_keys()
    assert len(ours) == 65


def test_sfd_face_file_loads_weights_only_and_strictly(tmp_path):
    state = {k: torch.randn(v.shape) * 0.01 for k, v in S3FDNet().state_dict().items()}
    good = tmp_path / "sfd_face.pth"
    torch.save(state, good)
    detector = load_s3fd(good)
    assert torch.equal(detector.net.conf[5].weight, state["conf.5.weight"])
    assert not detector.net.training

    torch.save({k: v for k, v in state.items() if k != "L2Norm4_3.weight"}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match="missing 1: L2Norm4_3.weight"):
        load_s3fd(tmp_path / "short.pth")
    torch.save({**state, "vgg.1.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected 1: vgg.1.weight"):
        load_s3fd(tmp_path / "extra.pth")
    with pytest.raises(FileNotFoundError, match="sfd_face.pth"):
        load_s3fd(tmp_path / "absent.pth")


def test_feature_maps_and_prior_boxes():
    net = S3FDNet()
    with torch.no_grad():
        loc, conf, sizes = net(torch.zeros(1, 3, 70, 100))
    # strides 4..128: pools floor except pool3 (ceil), then two stride-2 convolutions with padding 1
    assert sizes == [(17, 25), (9, 13), (4, 6), (2, 3), (1, 2), (1, 1)]  # 25 -> 13: ceil
    priors = prior_boxes((70, 100), sizes)
    assert loc.shape == (1, priors.shape[0], 4) and conf.shape == (1, priors.shape[0], 2)
    expected = []
    for (h, w), step, size in zip(sizes, (4, 8, 16, 32, 64, 128), (16, 32, 64, 128, 256, 512)):
        for i in range(h):
            for j in range(w):  # the cell's centre in pixels, over the input's size
                expected.append([(j + 0.5) * step / 100, (i + 0.5) * step / 70, size / 100, size / 70])
    np.testing.assert_allclose(priors.numpy(), np.array(expected), rtol=1e-6)
    assert priors.dtype == torch.float32


def test_decode_against_centre_size_arithmetic():
    rng = np.random.default_rng(0)
    priors = np.concatenate([rng.uniform(0, 1, (50, 2)), rng.uniform(0.05, 0.5, (50, 2))], 1)
    loc = rng.normal(0, 1, (50, 4))
    boxes = decode(torch.tensor(loc, dtype=torch.float32), torch.tensor(priors, dtype=torch.float32)).numpy()
    cx = priors[:, 0] + loc[:, 0] * 0.1 * priors[:, 2]
    cy = priors[:, 1] + loc[:, 1] * 0.1 * priors[:, 3]
    w, h = priors[:, 2] * np.exp(loc[:, 2] * 0.2), priors[:, 3] * np.exp(loc[:, 3] * 0.2)
    np.testing.assert_allclose(boxes, np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), atol=1e-6)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, overlap: float) -> list[int]:
    """Written out: take the best left, drop every box overlapping it by IoU > overlap (areas without +1)."""
    left, kept = list(np.argsort(-scores, kind="stable")), []
    while left:
        best = left.pop(0)
        kept.append(int(best))

        def iou(k: int) -> float:
            a, b = boxes[best], boxes[k]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
        left = [k for k in left if iou(k) <= overlap]
    return kept


@pytest.mark.parametrize("overlap", [0.1, 0.3, 0.5])
def test_both_nms_against_greedy_suppression(overlap):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, (80, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (80, 2))], 1)
    scores = rng.permutation(80) / 80 + 0.01  # distinct
    expected = greedy_nms(boxes, scores, overlap)
    kept = nms(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores, dtype=torch.float32), overlap)
    assert kept.tolist() == greedy_nms(boxes.astype(np.float32), scores.astype(np.float32), overlap)
    assert nms_numpy(np.concatenate([boxes, scores[:, None]], 1), overlap).tolist() == expected
    assert len(expected) < 80
    assert nms(torch.zeros(0, 4), torch.zeros(0)).numel() == 0
    assert nms_numpy(np.zeros((0, 5)), 0.1).size == 0


def test_input_is_rgb_minus_mean_and_scaled_as_opencvs_fx_path():
    image = np.zeros((8, 12, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 200, 100, 50
    x = network_input(image, 1)
    assert x.shape == (1, 3, 8, 12)
    assert x[0, :, 0, 0].tolist() == [200 - 123, 100 - 117, 50 - 104]
    # a ramp 66 wide at fx = 0.25: round(16.5) = 16 columns, sampled every 4 source pixels (not 66/16):
    # column j at 4j + 1.5, halfway between 4j + 1 and 4j + 2, rounded up
    ramp = np.broadcast_to(np.arange(66, dtype=np.uint8)[None, :, None], (40, 66, 3)).copy()
    x = network_input(ramp, 0.25)
    assert x.shape == (1, 3, 10, 16)
    assert (x[0, 0, 3] + 123).tolist() == [4 * j + 2 for j in range(16)]


class PlantedNet(nn.Module):
    """S3FD's outputs with zero offsets and a face at chosen cells of the stride-4 map."""

    def __init__(self, cells: dict[tuple[int, int], float]) -> None:
        super().__init__()
        self.cells = cells

    def forward(self, x: torch.Tensor):
        h, w = x.shape[2:]
        sizes, size = [], (h, w)
        for k in range(6):
            size = (-(-size[0] // 2), -(-size[1] // 2)) if k else (h // 4, w // 4)
            sizes.append(size)
        count = sum(a * b for a, b in sizes)
        conf = torch.zeros(1, count, 2)
        conf[..., 0] = 5.0  # background everywhere
        for (i, j), logit in self.cells.items():
            conf[0, i * sizes[0][1] + j, 1] = logit
        return torch.zeros(1, count, 4), conf, sizes


def test_planted_detections_come_back_in_image_pixels_best_first():
    detector = S3FD(PlantedNet({(2, 3): 9.0, (5, 1): 8.0, (2, 4): 7.0}), "cpu")  # (2, 4) overlaps (2, 3)
    image = np.zeros((128, 160, 3), np.uint8)
    faces = detector.detect_faces(image, conf_th=0.9, scales=[0.25])
    # at 0.25 the input is 32x40; a stride-4 prior: centre (j + 0.5)·4 / 40 of the width, side 16 / 40,
    # times the 160x128 image: centre (j + 0.5)·16 px, 64 px wide (and 64 px tall)
    assert faces.dtype == np.float64 and faces.shape == (2, 5)
    np.testing.assert_allclose(faces[0, :4], [3.5 * 16 - 32, 2.5 * 16 - 32, 3.5 * 16 + 32, 2.5 * 16 + 32], atol=1e-4)
    np.testing.assert_allclose(faces[1, :4], [1.5 * 16 - 32, 5.5 * 16 - 32, 1.5 * 16 + 32, 5.5 * 16 + 32], atol=1e-4)
    assert faces[0, 4] > faces[1, 4] > 0.9
    # (2, 4) overlaps (2, 3) by IoU 0.6: Detect's NMS (0.3) drops it
    assert len(detector.detect_faces(image, conf_th=0.5, scales=[0.25])) == 2
    rows = detect(torch.zeros(3, 4), torch.tensor([0.2, 0.04, 0.6]), torch.tensor([[0.5, 0.5, 0.2, 0.2]] * 3))
    assert rows[:, 0].tolist() == pytest.approx([0.6])  # 0.2 suppressed by the identical 0.6; 0.04 under 0.05


def test_detector_refuses_what_is_not_an_rgb_image():
    detector = S3FD(PlantedNet({}), "cpu")
    with pytest.raises(ValueError, match=r"RGB uint8 \[H, W, 3\].*float32"):
        detector.detect_faces(np.zeros((64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        detector.detect_faces(np.zeros((64, 64), np.uint8))


def moving_face(frames: int, missing: set[int], start: float = 40.0, side: float = 150.0) -> list[np.ndarray]:
    rows = []
    for f in range(frames):
        x = start + 2.0 * f
        rows.append(np.zeros((0, 5)) if f in missing else np.array([[x, 50.0, x + side, 50.0 + side, 0.99]]))
    return rows


def test_a_moving_face_with_gaps_is_one_track_with_interpolated_boxes():
    detections = moving_face(130, missing={10, 11, 12, 50} | set(range(80, 100)))
    # plus a short-lived second face far away, and a small one all along
    for f in range(130):
        extra = [[600.0, 400.0, 620.0, 420.0, 0.95]] + ([[500.0, 300.0, 640.0, 440.0, 0.97]] if f < 60 else [])
        detections[f] = np.concatenate([detections[f], np.array(extra)])
    tracks = ft.track_shot(detections)
    assert len(tracks) == 1
    track = tracks[0]
    assert track.frames.tolist() == list(range(130))
    expected_x = 40.0 + 2.0 * np.arange(130)  # the missed frames lie on the same straight line
    np.testing.assert_allclose(track.boxes[:, 0], expected_x, atol=1e-9)
    np.testing.assert_allclose(track.boxes[:, 3], 200.0, atol=1e-9)
    # the small face is a track too when small faces are allowed; the 60-frame one only when short ones are
    assert len(ft.track_shot(detections, min_face_size=0)) == 2
    assert len(ft.track_shot(detections, min_track=50)) == 2


def test_interpolation_and_median_filter_follow_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    signal = pytest.importorskip("scipy.signal")
    rng = np.random.default_rng(3)
    frames = np.sort(rng.choice(300, 120, replace=False))
    boxes = rng.uniform(0, 500, (120, 4))
    every, ours = ft.interpolate_boxes(frames, boxes)
    theirs = np.stack([interpolate.interp1d(frames, boxes[:, k])(every) for k in range(4)], 1)
    assert np.array_equal(ours, theirs)
    values = rng.uniform(50, 150, 200)
    assert np.array_equal(ft.median_filter(values), signal.medfilt(values, kernel_size=13))


def test_track_needs_more_than_min_track_faces_over_min_size():
    assert len(ft.track_shot(moving_face(101, set()))) == 1
    assert ft.track_shot(moving_face(100, set())) == []  # 100 faces: not more than min_track
    assert ft.track_shot(moving_face(130, set(), side=99.0)) == []  # 99 px: not over min_face_size
    # a gap of more than 25 frames ends the track: two halves of 60 frames, both too short
    assert ft.track_shot(moving_face(150, set(range(60, 90)))) == []


def test_crops_cut_the_known_region_in_bgr():
    rng = np.random.default_rng(5)
    frame = rng.integers(0, 256, (400, 500, 3), dtype=np.uint8)
    # half size s = 80: the crop is 160 + 64 = 224 rows (s above the centre, 1.8 s below) and 2 · 1.4 s = 224
    # columns, so no resampling: exactly the frame's pixels
    track = ft.FaceTrack(np.arange(20), np.tile([170.0, 120.0, 330.0, 280.0], (20, 1)))  # centre (250, 200)
    (crops,) = ft.crop_tracks([frame] * 20, [track])
    assert crops.crops.shape == (20, 224, 224, 3) and crops.crops.dtype == np.uint8
    assert np.array_equal(crops.crops[7], frame[200 - 80:200 + 144, 250 - 112:250 + 112, ::-1])
    # near the corner the crop reaches into the grey padding (110)
    corner = ft.FaceTrack(np.arange(20), np.tile([-40.0, -40.0, 120.0, 120.0], (20, 1)))  # centre (40, 40)
    (crops,) = ft.crop_tracks([frame] * 20, [corner])
    assert (crops.crops[0, :40] == 110).all() and (crops.crops[0, :, :72] == 110).all()
    assert np.array_equal(crops.crops[0, 40:, 72:], frame[:184, :152, ::-1])


class FoundNothing:
    def detect_faces(self, image, conf_th=0.8, scales=(1,)):
        return np.empty((0, 5))


def test_no_face_says_why_lip_sync_cannot_be_scored():
    frames = [np.zeros((64, 64, 3), np.uint8)] * 110
    with pytest.raises(ft.NoFaceTrackError, match="lip sync cannot be scored: no face could be tracked.*"
                                                  "found a face in 0 of 110 frames"):
        ft.face_track_crops(lambda: iter(frames), FoundNothing())
    with pytest.raises(ft.NoFaceTrackError, match="lip sync cannot be scored: the video has 50 frames"):
        ft.face_track_crops(lambda: iter(frames[:50]), FoundNothing())
    with pytest.raises(ValueError, match="frame 0: face tracking takes RGB uint8"):
        ft.detect_video(FoundNothing(), [np.zeros((64, 64, 4), np.uint8)])


def test_face_track_crops_end_to_end_on_planted_detections():
    class Follows:  # a face box that moves with the frame index written in the first pixel
        def detect_faces(self, image, conf_th=0.8, scales=(1,)):
            f = float(image[0, 0, 0])
            return np.array([[100.0 + f, 80.0, 260.0 + f, 240.0, 0.99]])

    frames = []
    for f in range(120):
        frame = np.full((360, 480, 3), 30, np.uint8)
        frame[0, 0, 0] = f
        frames.append(frame)
    (track,) = ft.face_track_crops(lambda: iter(frames), Follows())
    assert track.frames.tolist() == list(range(120)) and track.crops.shape == (120, 224, 224, 3)
    assert track.s[60] == 80.0 and track.x[60] == 240.0
