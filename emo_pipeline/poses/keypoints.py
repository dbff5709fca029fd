"""ComfyUI's POSE_KEYPOINT (what comfyui_controlnet_aux's DWPose Estimator and OpenPose Pose nodes return) as a
PoseSequence of hands.

The format, as comfyui_controlnet_aux's encode_poses_as_dict writes it: a list with one dict per frame,
{"people": [{"pose_keypoints_2d": [...], "face_keypoints_2d": [...], "hand_left_keypoints_2d": [x, y, c, …] (21
points, 63 values), "hand_right_keypoints_2d": [...]}, …], "canvas_width": W, "canvas_height": H}. A part that was
not detected is null (or absent), a point that was not detected is [0, 0, 0]; c is 1.0 or the detector's score,
depending on the version.

Coordinates are pixels or fractions of the canvas, depending on which node and which version made them: the OpenPose
node divides by the image size, the DWPose node's newer versions keep pixels (older ones divided), and pose editors
write pixels. So the whole sequence is read as pixels when any detected coordinate exceeds 2, as fractions
otherwise. The cut is at 2, not 1: a normalised point that a detector places just past the image's edge reads
slightly above 1 (EchoMimic v2's own demo poses reach 1.113), while a pixel hand all inside the first 2 pixels is
no hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .sequence import BODY_KEYPOINTS, KEYPOINTS, PoseError, PoseSequence

PIXELS_ABOVE = 2.0
PARTS = ("pose_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d", "hand_right_keypoints_2d")
HANDS = ("hand_left_keypoints_2d", "hand_right_keypoints_2d")


def fit_in_square(height: int, width: int, size: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The area (height, width) a canvas of this shape is drawn at inside a size² frame, and its placement (rb,
    re, cb, ce): the longer side fills the frame, the shorter is centred, rounded as the reference's
    resize_and_pad_param. (That function also sets the height to `size` for a wide canvas, stretching it square;
    its crops are never wide, so this keeps the aspect for both.)"""
    half = size // 2
    if height > width:
        new_w = int(round(width / height * size))
        cb = half - new_w // 2
        return (size, new_w), (0, size, cb, cb + new_w)
    new_h = int(round(height / width * size))
    rb = half - new_h // 2
    return (new_h, size), (rb, rb + new_h, 0, size)


def _given(values: Any) -> bool:
    """Whether a part was written at all (null, absent or [] mean not detected)."""
    return values is not None and len(values) > 0


def _points(values: Any, where: str) -> np.ndarray | None:
    """[21, 3] (x, y, c) of one hand, or None for a hand that was not detected."""
    if not _given(values):
        return None
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (KEYPOINTS * 3,):
        raise PoseError(f"POSE_KEYPOINT {where} is not 63 numbers (21 points of x, y, confidence): connect a DWPose "
                        "Estimator or OpenPose Pose node's POSE_KEYPOINT output.")
    return array.reshape(KEYPOINTS, 3)


def _canvas(frame: Any, index: int) -> tuple[int, int]:
    if not isinstance(frame, dict):
        raise PoseError(f"POSE_KEYPOINT frame {index} is a {type(frame).__name__}, not a dict: connect a DWPose "
                        "Estimator or OpenPose Pose node's POSE_KEYPOINT output.")
    height, width = frame.get("canvas_height"), frame.get("canvas_width")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 for v in (height, width)):
        raise PoseError(f"POSE_KEYPOINT frame {index} has canvas {width!r}×{height!r}, not a size in pixels: connect "
                        "a DWPose Estimator or OpenPose Pose node's POSE_KEYPOINT output.")
    return int(height), int(width)


def _people(frame: dict, index: int) -> list[dict]:
    people = frame.get("people") or []
    if not isinstance(people, list) or not all(isinstance(p, dict) for p in people):
        raise PoseError(f"POSE_KEYPOINT frame {index}: 'people' is not a list of people: connect a DWPose Estimator "
                        "or OpenPose Pose node's POSE_KEYPOINT output.")
    return people


def _in_pixels(frames: list[dict]) -> bool:
    """Whether the sequence's coordinates are pixels (see the module's note)."""
    for index, frame in enumerate(frames):
        for number, person in enumerate(_people(frame, index)):
            for part in PARTS:
                values = person.get(part)
                if not _given(values):
                    continue
                try:
                    points = np.asarray(values, dtype=np.float64).reshape(-1, 3)
                except (TypeError, ValueError):
                    raise PoseError(f"POSE_KEYPOINT frame {index}, person {number}: {part} is not (x, y, confidence) "
                                    "numbers: connect a DWPose Estimator or OpenPose Pose node's POSE_KEYPOINT "
                                    "output.") from None
                seen = points[points[:, 2] > 0, :2]
                if seen.size and float(np.nanmax(np.abs(seen))) > PIXELS_ABOVE:
                    return True
    return False


def from_pose_keypoint(frames: list[dict], frame_size: int = 768, fps: float = 24.0,
                       source: str = "POSE_KEYPOINT") -> PoseSequence:
    """The hands of a POSE_KEYPOINT as a PoseSequence, checked. Hands are ordered as the reference's DWPose
    detector orders them: the left hands of every person, then their right hands; a missing hand or point gets a
    score of 0 (and stays at (0, 0), which is never drawn). The canvas is fitted into the frame_size² frame with its
    aspect kept and centred (fit_in_square)."""
    if isinstance(frames, dict):  # one frame given on its own
        frames = [frames]
    if not isinstance(frames, (list, tuple)) or not frames:
        raise PoseError("POSE_KEYPOINT is empty or not a list of frames: connect a DWPose Estimator or OpenPose Pose "
                        "node's POSE_KEYPOINT output, run on the driving video's frames.")
    canvases = [_canvas(frame, i) for i, frame in enumerate(frames)]
    odd = next((i for i, c in enumerate(canvases) if c != canvases[0]), None)
    if odd is not None:
        raise PoseError(f"POSE_KEYPOINT frame {odd} has a {canvases[odd][1]}×{canvases[odd][0]} canvas, frame 0 a "
                        f"{canvases[0][1]}×{canvases[0][0]} one: run the pose detector on frames of one size.")
    height, width = canvases[0]
    people = [_people(frame, i) for i, frame in enumerate(frames)]
    if not any(_given(person.get(part)) for persons in people for person in persons for part in HANDS):
        raise PoseError("POSE_KEYPOINT has no hand keypoints in any frame: EchoMimic v2 is driven by hands; set "
                        "detect_hand to enable on the DWPose Estimator (or OpenPose Pose) node, and keep the hands "
                        "in view of the driving video.")
    divide = np.array([width, height], np.float64) if _in_pixels(frames) else np.ones(2)
    most = max(len(persons) for persons in people)
    hands = np.zeros((len(frames), 2 * most, KEYPOINTS, 2), np.float32)
    scores = np.zeros((len(frames), 2 * most, KEYPOINTS), np.float32)
    for index, persons in enumerate(people):
        for number, person in enumerate(persons):
            for side, part in enumerate(HANDS):
                points = _points(person.get(part), f"frame {index}, person {number}, {part}")
                if points is None:
                    continue
                slot = side * most + number  # all left hands, then all right hands
                seen = points[:, 2] > 0
                hands[index, slot] = np.where(seen[:, None], points[:, :2] / divide, 0.0)
                scores[index, slot] = np.where(seen, points[:, 2], 0.0)
    body = np.zeros((len(frames), BODY_KEYPOINTS, 2), np.float32)
    body_scores = np.zeros((len(frames), BODY_KEYPOINTS), np.float32)
    for index, persons in enumerate(people):  # the first person's body: only fitting to a photo reads it
        values = persons[0].get(PARTS[0]) if persons else None
        points = np.asarray(values, dtype=np.float64) if _given(values) else None
        if points is not None and points.shape == (BODY_KEYPOINTS * 3,):
            points = points.reshape(BODY_KEYPOINTS, 3)
            seen = points[:, 2] > 0
            body[index] = np.where(seen[:, None], points[:, :2] / divide, 0.0)
            body_scores[index] = np.where(seen, points[:, 2], 0.0)
    bodies = {"body": torch.from_numpy(body), "body_scores": torch.from_numpy(body_scores)} \
        if body_scores.any() else {}
    area, placement = fit_in_square(height, width, frame_size)
    return PoseSequence(torch.from_numpy(hands), torch.from_numpy(scores), area, placement, frame_size=frame_size,
                        fps=fps, source=source, **bodies).validate()
