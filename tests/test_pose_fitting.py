"""Poses from a driving video's DWPose findings (EchoMimic v2's crop of the clip, the main person, the model's frame
rate) and poses fitted to a photo's body (its straight-line fit), checked against the arithmetic written out here;
and the body keypoints that fitting reads, carried through pose files, .npz and POSE_KEYPOINT."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from emo_pipeline.poses.demo_files import load_pose_folder, load_pose_npz, save_pose_folder, save_pose_npz
from emo_pipeline.poses.fitting import FIT_POINTS, fit_to_photo, photo_square
from emo_pipeline.poses.from_video import (at_rate, crop_box, detect_video, main_person, photo_body,
                                           poses_from_detections)
from emo_pipeline.poses.keypoints import from_pose_keypoint
from emo_pipeline.poses.sequence import PoseError, PoseSequence


@dataclass(frozen=True)
class Found:  # what DWPose returns for one image: [people, 134, 2] pixels and [people, 134] scores
    keypoints: np.ndarray
    scores: np.ndarray


def person(neck=(500.0, 300.0), face_top=200.0, arms_bottom=600.0, hand=(500.0, 480.0), score=0.9) -> tuple:
    """One person's 134 keypoints: the face's highest point at face_top, the lowest of the first seven body points
    at arms_bottom, the neck at `neck`, every hand point at `hand`; all other points between."""
    points = np.tile(np.array(neck, np.float64), (134, 1))
    points[24:92, 1] = face_top + 20
    points[30, 1] = face_top  # one face point is the highest
    points[0:7, 1] = arms_bottom - 50
    points[3, 1] = arms_bottom  # the right elbow is the lowest of nose … left elbow
    points[92:134] = hand
    points[1] = neck
    return points, np.full(134, score)


def found(*people) -> Found:
    if not people:
        return Found(np.zeros((0, 134, 2)), np.zeros((0, 134)))
    return Found(np.stack([p[0] for p in people]), np.stack([p[1] for p in people]))


# --- the driving video ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source_fps, fps, frames", [(30.0, 24.0, 45), (24.0, 24.0, 10), (12.0, 24.0, 7),
                                                     (25.0, 24.0, 60)])
def test_the_video_is_sampled_at_the_models_rate_by_time(source_fps, fps, frames):
    shown = [frame for frame, count in at_rate(range(frames), source_fps, fps) for _ in range(count)]
    # output frame k shows the source frame nearest k / fps, for as long as the video lasts
    expected = [round(k * source_fps / fps) for k in range(frames * 3) if round(k * source_fps / fps) < frames]
    assert shown == expected
    calls = []
    detections = detect_video(range(frames), source_fps, fps, lambda f: calls.append(f) or f)
    assert detections == expected and calls == sorted(set(expected))  # each source frame detected once


def test_the_crop_and_the_hands_follow_echomimic_v2s_preprocessing():
    height, width = 800, 1000
    poses = poses_from_detections([found(person())], height, width)
    # by hand, in fractions of the frame: face top 0.25, arms bottom 0.75, neck x 0.5; margin 25 % of 0.5
    h_min, h_max = 0.25 - 0.125 * 0.65, 0.75 + 0.125 * 0.5
    side = int(h_max * 800) - int(h_min * 800) + 1  # 650 - 135 + 1 = 516 pixels, square
    left = 500 - side // 2
    assert crop_box([found(person())], height, width) == pytest.approx((left / 1000, (left + side) / 1000, h_min,
                                                                        h_max))
    expected = [(0.5 - left / 1000) / (side / 1000), (0.6 - h_min) / (h_max - h_min)]  # the hand at (500, 480)
    torch.testing.assert_close(poses.hands[0], torch.tensor(expected, dtype=torch.float32).expand(2, 21, 2))
    assert poses.area == (768, 768) and poses.placement == (0, 768, 0, 768) and poses.fps == 24.0
    torch.testing.assert_close(poses.scores[0], torch.full((2, 21), 0.9))
    assert poses.body is not None and poses.body.shape == (1, 18, 2)


def test_the_clip_crop_spans_every_frame_and_the_main_person_is_the_surest():
    height, width = 800, 1000
    near = found(person(face_top=100.0, arms_bottom=500.0, neck=(400.0, 250.0)))
    far = found(person(face_top=300.0, arms_bottom=700.0, neck=(600.0, 350.0)))
    w_min, w_max, h_min, h_max = crop_box([near, far], height, width)
    span = 0.875 - 0.125  # the highest face top of all frames to the lowest arm point of all frames
    assert (h_min, h_max) == pytest.approx((0.125 - span * 0.25 * 0.65, 0.875 + span * 0.25 * 0.5))
    assert (w_min + w_max) / 2 == pytest.approx(0.5, abs=1e-3)  # centred on the neck's mean x
    # two people: the one whose body scores are higher on average is followed, with their own two hands
    crowd = found(person(hand=(100.0, 100.0), score=0.4), person(hand=(600.0, 500.0), score=0.8))
    assert main_person(crowd) == 1
    poses = poses_from_detections([crowd], height, width)
    box = crop_box([crowd], height, width)
    assert float(poses.hands[0, 0, 0, 0]) == pytest.approx((0.6 - box[0]) / (box[1] - box[0]), abs=1e-5)


def test_a_frame_without_anyone_gets_no_hands_and_a_video_without_anyone_is_refused():
    poses = poses_from_detections([found(person()), found(), found(person())], 800, 1000)
    assert len(poses) == 3 and float(poses.scores[1].abs().sum()) == 0.0 and float(poses.scores[0].min()) > 0
    with pytest.raises(PoseError, match="no person in any frame of the driving video"):
        poses_from_detections([found(), found()], 800, 1000)
    with pytest.raises(PoseError, match="no person in the photo"):
        photo_body(found())


# --- fitting to the photo -------------------------------------------------------------------------------------------

def sequence_with_body(scale=1.0) -> PoseSequence:
    """Three frames in a 768×576 area; the body the same in each (so the fit is exact), the hands moving."""
    gen = torch.Generator().manual_seed(0)
    body = (0.2 + 0.6 * torch.rand(18, 2, generator=gen)).expand(3, 18, 2).clone()
    hands = (0.3 + 0.4 * torch.rand(3, 2, 21, 2, generator=gen))
    return PoseSequence(hands, torch.full((3, 2, 21), 0.9), (768, 576), (0, 768, 96, 672), source="seq",
                        body=body, body_scores=torch.ones(3, 18))


@pytest.mark.parametrize("photo_size", [(1000, 1000), (1200, 900), (700, 1100)])
def test_fitting_puts_the_sequences_body_on_the_photos(photo_size):
    poses = sequence_with_body()
    area_px = np.array([576.0, 768.0])  # the area's width, height: fractions → its pixels
    scale, shift = 1.3, np.array([40.0, -25.0])
    photo = poses.body[0].double().numpy() * area_px * scale + shift  # the photo's body: the sequence's, moved
    fitted, line = fit_to_photo(poses, photo, np.ones(18), photo_size)
    top, left, side = photo_square(*photo_size)
    expected = ((poses.hands.double().numpy() * area_px * scale + shift) - [left, top]) / side
    np.testing.assert_allclose(fitted.hands.double().numpy(), expected, atol=1e-5)
    assert fitted.area == (768, 768) and fitted.placement == (0, 768, 0, 768)
    assert f"drawn ×{scale * 768 / side:.2f}" in line and "14 keypoints of the photo" in line


def test_fitting_trusts_only_seen_points_and_says_when_it_cannot():
    poses = sequence_with_body()
    area_px = np.array([576.0, 768.0])
    photo = poses.body[0].double().numpy() * area_px * 0.8 + [10.0, 20.0]
    # a missed point of the photo (score 0.2) and of the sequence (score 0, a NaN) change nothing
    wild, low = photo.copy(), np.ones(18)
    wild[FIT_POINTS[0]], low[FIT_POINTS[0]] = [5000.0, -300.0], 0.2
    body = poses.body.clone()
    body[1, FIT_POINTS[1]] = float("nan")
    scores = poses.body_scores.clone()
    scores[1, FIT_POINTS[1]] = 0.0
    messy = PoseSequence(poses.hands, poses.scores, poses.area, poses.placement, source="seq", body=body,
                         body_scores=scores)
    clean, _ = fit_to_photo(poses, photo, np.ones(18), (1000, 1000))
    fitted, _ = fit_to_photo(messy, wild, low, (1000, 1000))
    torch.testing.assert_close(fitted.hands, clean.hands)
    one = np.zeros(18)
    one[1] = 1.0
    with pytest.raises(PoseError, match="only one body keypoint in the photo"):
        fit_to_photo(poses, photo, one, (1000, 1000))
    bare = PoseSequence(poses.hands, poses.scores, poses.area, poses.placement, source="seq")
    with pytest.raises(PoseError, match="seq has no body keypoints.*scale and offset"):
        fit_to_photo(bare, photo, np.ones(18), (1000, 1000))


# --- bodies kept by the pose files ------------------------------------------------------------------------------------

def test_bodies_survive_pose_folders_npz_and_sub_sequences(tmp_path):
    poses = sequence_with_body()
    from_folder = load_pose_folder(save_pose_folder(poses, tmp_path / "folder"))
    from_npz = load_pose_npz(save_pose_npz(poses, tmp_path / "poses.npz"))
    for loaded in (from_folder, from_npz):
        torch.testing.assert_close(loaded.body, poses.body)
        torch.testing.assert_close(loaded.body_scores, poses.body_scores)
    part, _ = poses.extend_to(5, "pingpong")
    torch.testing.assert_close(part.body[3], poses.body[1])
    moved = poses.aligned(2.0, (0.1, 0.0))
    torch.testing.assert_close(moved.body, (poses.body - 0.5) * 2 + 0.5 + torch.tensor([0.1, 0.0]))
    with pytest.raises(PoseError, match="body keypoints of shape"):
        PoseSequence(poses.hands, poses.scores, poses.area, poses.placement, body=poses.body[:2],
                     body_scores=poses.body_scores[:2]).validate()


def test_pose_keypoint_bodies_are_read_for_fitting():
    body = [v for i in range(18) for v in (100.0 + i, 200.0 + i, 0.9 if i != 4 else 0.0)]
    hand = [v for i in range(21) for v in (300.0 + i, 400.0, 0.8)]
    frame = {"people": [{"pose_keypoints_2d": body, "hand_left_keypoints_2d": hand}], "canvas_width": 512,
             "canvas_height": 768}
    poses = from_pose_keypoint([frame, frame])
    assert poses.body.shape == (2, 18, 2)
    assert float(poses.body[0, 3, 0]) == pytest.approx(103 / 512) and float(poses.body_scores[0, 4]) == 0.0
