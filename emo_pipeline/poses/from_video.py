"""Hand poses from a driving video through DWPose, made as EchoMimic v2 made its demo sequences.

Its preprocessing (EMTD_dataset/preprocess.py: get_pose_params, save_pose_params_item) takes the person DWPose is
surest of in each frame, and one square crop for the whole clip: from a little above the highest face point to a
little below the shoulders' and arms' lowest point, centred on the neck's mean position; the keypoints are kept
as fractions of that crop, drawn over the whole 768² frame. Ours does the same, with three differences, each said
where it is made: the video is sampled at the model's frame rate by time (the reference keeps every frame, or
every n-th, and plays them at 24 fps, so a 30 fps video moves at 0.8× speed), a frame in which DWPose finds no one
gets no hands (the reference stops with an IndexError), and the main person's own two hands are kept (with more
than one person the reference takes two hands of the wrong people: its hand list holds all left hands, then all
right hands).

A frame is detected once, however many video frames show it, and frames are taken as the video is decoded, so a
long driving video is never held whole.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
import torch

from .sequence import BODY_KEYPOINTS, KEYPOINTS, PoseError, PoseSequence

# DWPose's 134 keypoints in OpenPose order: body (with the neck), feet, face, left hand, right hand
BODY, FACE, LEFT_HAND, RIGHT_HAND = slice(0, 18), slice(24, 92), slice(92, 113), slice(113, 134)
ARMS = 7  # nose, neck, shoulders, elbows, (right) wrist: the crop's bottom is the lowest of these
MARGIN = 0.25  # the crop's margin as a share of the face-to-arms height: 65 % of it above, 50 % below


class Detection(Protocol):
    keypoints: np.ndarray  # [people, 134, 2] pixels
    scores: np.ndarray  # [people, 134]


def main_person(found: Detection) -> int | None:
    """The person the poses follow: the one whose 18 body scores are highest on average (the reference's rule), or
    None when nobody was found."""
    if len(found.scores) == 0:
        return None
    return int(np.argmax(found.scores[:, BODY].mean(axis=1)))


def at_rate(frames: Iterable[np.ndarray], source_fps: float, fps: float) -> Iterator[tuple[np.ndarray, int]]:
    """(frame, how many output frames show it): the video sampled at `fps` by time, output frame k showing the
    source frame nearest k / fps. Frames no output frame shows are skipped (count 0 frames are not yielded)."""
    if not (source_fps > 0 and fps > 0):
        raise PoseError(f"a driving video at {source_fps} frames per second: give a video with a frame rate.")
    step, k = source_fps / fps, 0
    for index, frame in enumerate(frames):
        count = 0
        while round(k * step) == index:
            count, k = count + 1, k + 1
        if count:
            yield frame, count


def detect_video(frames: Iterable[np.ndarray], source_fps: float, fps: float, detect: Callable[[np.ndarray], Detection],
                 on_frame: Callable[[int], None] | None = None) -> list[Detection]:
    """DWPose's findings for each output frame at `fps`: `detect` (a DWPose) runs once per source frame used;
    on_frame(count of output frames so far) after each (a progress bar, and a cancel point)."""
    found: list[Detection] = []
    for frame, count in at_rate(frames, source_fps, fps):
        result = detect(frame)
        found += [result] * count
        if on_frame is not None:
            on_frame(len(found))
    return found


def crop_box(found: list[Detection], height: int, width: int) -> tuple[float, float, float, float]:
    """(w_min, w_max, h_min, h_max) as fractions of the video frame: the square crop the reference's
    get_pose_params chooses for the whole clip (see the module's note)."""
    tops, bottoms, necks = [], [], []
    for result in found:
        person = main_person(result)
        if person is None:
            continue
        points = result.keypoints[person] / np.array([width, height], np.float64)
        tops.append(points[FACE, 1].min())
        bottoms.append(points[BODY][:ARMS, 1].max())
        necks.append(points[1, 0])
    if not tops:
        raise PoseError("DWPose finds no person in any frame of the driving video: use a video of one person, "
                        "upper body and hands in view.")
    h_min, h_max, neck = min(tops), max(bottoms), float(np.mean(necks))
    margin = (h_max - h_min) * MARGIN
    h_min, h_max = max(h_min - margin * 0.65, 0.0), min(h_max + margin * 0.5, 1.0)
    # the reference rounds the crop to whole pixels, square, before turning it back into fractions
    side = int(h_max * height) - int(h_min * height) + 1
    left = int(neck * width) - side // 2
    return left / width, (left + side) / width, h_min, h_max


def poses_from_detections(found: list[Detection], height: int, width: int, frame_size: int = 768,
                          fps: float = 24.0, source: str = "driving video") -> PoseSequence:
    """The main person's hands (and body) of every frame as a PoseSequence over the whole frame, in the crop
    crop_box chooses, checked."""
    w_min, w_max, h_min, h_max = crop_box(found, height, width)
    origin = np.array([w_min, h_min], np.float64)
    extent = np.array([w_max - w_min, h_max - h_min], np.float64)
    hands = np.zeros((len(found), 2, KEYPOINTS, 2), np.float32)
    scores = np.zeros((len(found), 2, KEYPOINTS), np.float32)
    body = np.zeros((len(found), BODY_KEYPOINTS, 2), np.float32)
    body_scores = np.zeros((len(found), BODY_KEYPOINTS), np.float32)
    for index, result in enumerate(found):
        person = main_person(result)
        if person is None:
            continue  # no hands: nothing is drawn in this frame
        points = (result.keypoints[person] / np.array([width, height], np.float64) - origin) / extent
        for slot, part in enumerate((LEFT_HAND, RIGHT_HAND)):
            hands[index, slot], scores[index, slot] = points[part], result.scores[person, part]
        body[index], body_scores[index] = points[BODY], result.scores[person, BODY]
    return PoseSequence(torch.from_numpy(hands), torch.from_numpy(scores), (frame_size, frame_size),
                        (0, frame_size, 0, frame_size), frame_size=frame_size, fps=fps, source=source,
                        body=torch.from_numpy(body), body_scores=torch.from_numpy(body_scores)).validate()


def photo_body(found: Detection) -> tuple[np.ndarray, np.ndarray]:
    """The main person's 18 body keypoints (pixels) and scores in a photo, for fitting.fit_to_photo."""
    person = main_person(found)
    if person is None:
        raise PoseError("DWPose finds no person in the photo, so the poses cannot be fitted to it: use a photo of "
                        "the upper body, or fit the poses by hand with scale and offset.")
    return found.keypoints[person, BODY].astype(np.float64), found.scores[person, BODY].astype(np.float64)


def uint8_frames(batches: Iterable[torch.Tensor]) -> Iterator[np.ndarray]:
    """Frames as DWPose takes them (uint8 [H, W, 3] RGB) from batches of float [B, H, W, 3] in 0..1 (ComfyUI's
    IMAGE, io.media.iter_video_frames)."""
    for batch in batches:
        for frame in batch:
            yield (frame[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
