"""The face tracks SyncNet scores, as syncnet_python's run_pipeline.py makes them after S3FD (read at commit
6efbb1c): detection on every frame, IOU tracking (`track_shot`) and 224x224 crops around the smoothed boxes
(`crop_video`), with its defaults: S3FD at scale 0.25 and threshold 0.9, IOU above 0.5 between a track's last
face and the next, at most 25 frames without a detection, tracks of more than 100 detections, faces whose
mean box side is over 100 pixels, crop scale 0.4, 25 fps.

What differs from running run_pipeline.py, on purpose:
- Frames come as RGB uint8 arrays at 25 fps from the caller (decoded with PyAV). run_pipeline re-encodes the
  video with ffmpeg (`-qscale:v 2 -r 25`, AVI), writes every frame as a JPEG and reads those back with cv2:
  two lossy steps (and ffmpeg's frame-rate conversion) that are not reproduced here.
- No scene detection: the whole video is one shot (run_pipeline cuts at scenedetect's ContentDetector shots,
  and a generated talking-head clip has none). As there, a shot shorter than min_track frames gives no track.
- The crops stay in memory. run_pipeline writes them to an AVI (XVID/MPEG-4 part 2, OpenCV's default quality)
  and SyncNetInstance.evaluate decodes that file again with ffmpeg into JPEGs read by cv2.imread: a lossy round
  trip (two encodings) that ours skips, so SyncNet sees the exact crops here and slightly different pixels
  there. That is a source of difference between our scores and syncnet_python's on the same video.

The crops are given as evaluate() reads them: **BGR** uint8 [n, 224, 224, 3] (cv2.imread's channel order,
colour, not grey), so SyncNet's lip stream gets them as its weights were trained. Flip the last axis for RGB.

Everything else is run_pipeline's arithmetic: Python float IOU, linear interpolation of the boxes over the
missing frames as scipy's interp1d does it (numpy.interp), the size/centre median filter of scipy.signal.medfilt
(kernel 13, zero padded at both ends: the first and last six frames' boxes are pulled towards zero, as there),
the padding with grey 110 by int(s·1.8) pixels, the crop's int() bounds, and cv2.resize(face, (224, 224))
INTER_LINEAR redone bit for bit by poses/dwpose.resize_linear. Neither scipy nor OpenCV is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..io.errors import NamedPlainly
from ..poses.dwpose import resize_linear
from .s3fd import DETECTION_SCALE, DETECTION_THRESHOLD, S3FD

IOU_THRESHOLD = 0.5   # track_shot's iouThres
NUM_FAILED_DET = 25   # --num_failed_det: frames a track may go without a detection
MIN_TRACK = 100       # --min_track: a track needs MORE than this many detections (and the shot this many frames)
MIN_FACE_SIZE = 100   # --min_face_size: the mean box width or height must be over this, in pixels
CROP_SCALE = 0.4      # --crop_scale
CROP_SIZE = 224
PAD_VALUE = 110
MEDIAN_KERNEL = 13
FRAME_RATE = 25


class NoFaceTrackError(NamedPlainly, ValueError):
    """No face could be followed long enough to score lip sync; the message says why."""


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value to compare by
class FaceTrack:
    """A tracked face: its frame indices (consecutive) and boxes (x1, y1, x2, y2) in pixels, the missed frames'
    boxes interpolated (track_shot's {'frame', 'bbox'})."""
    frames: np.ndarray  # int64 [n]
    boxes: np.ndarray   # float64 [n, 4]


@dataclass(frozen=True, eq=False)
class TrackCrops:
    """A track's crops as SyncNet's evaluate() reads them, and the smoothed crop centre and half size
    (crop_video's proc_track). The audio that goes with them runs from frames[0] / 25 to (frames[-1] + 1) / 25
    seconds (its audiostart, audioend)."""
    track: FaceTrack
    x: np.ndarray      # float64 [n]: crop centre, medfilt-ed box centres
    y: np.ndarray      # float64 [n]
    s: np.ndarray      # float64 [n]: half the larger box side, medfilt-ed
    crops: np.ndarray  # uint8 [n, 224, 224, 3], BGR

    @property
    def frames(self) -> np.ndarray:
        return self.track.frames


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    """run_pipeline's bb_intersection_over_union, in Python floats (0 for two empty boxes, where it divides by
    zero)."""
    x_a, y_a, x_b, y_b = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x_b - x_a) * max(0, y_b - y_a)
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    return inter / union if union != 0 else 0.0


def interpolate_boxes(frames: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every frame from the first to the last, each box coordinate linearly interpolated as run_pipeline's
    scipy interp1d(framenum, bboxes[:, k]) does it: for one float64 column over integer frames scipy hands the
    work to numpy.interp, which is used here (a detected frame gets its own value back exactly)."""
    frames = np.asarray(frames, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    every = np.arange(frames[0], frames[-1] + 1)
    return every, np.stack([np.interp(every, frames, boxes[:, k]) for k in range(4)], axis=1)


def track_shot(detections: Sequence[np.ndarray], iou_threshold: float = IOU_THRESHOLD,
               num_failed_det: int = NUM_FAILED_DET, min_track: int = MIN_TRACK,
               min_face_size: float = MIN_FACE_SIZE) -> list[FaceTrack]:
    """run_pipeline's track_shot on one shot: `detections[f]` is frame f's S3FD rows [k, 5] (x1, y1, x2, y2,
    score). Tracks are built one after another, each from the first face left; a face joins when it is at
    most num_failed_det frames after the track's last face and overlaps it by IOU > iou_threshold. Kept: tracks
    of more than min_track faces whose interpolated boxes' mean width or height is over min_face_size.

    Its loop removes a face from the frame's list while iterating over it, so the face after one that was
    taken is not looked at in that pass (it stays for the next track): reproduced, since it decides which
    track a second face joins."""
    remaining = [[[float(v) for v in row[:4]] for row in np.asarray(frame_boxes).reshape(-1, 5)]
                 for frame_boxes in detections]
    tracks: list[FaceTrack] = []
    while True:
        track: list[tuple[int, list[float]]] = []
        for frame, faces in enumerate(remaining):
            if track and frame - track[-1][0] > num_failed_det:
                break  # its inner `break`: every later frame is further still
            index = 0
            while index < len(faces):  # `for face in framefaces` with framefaces.remove(face) inside
                if not track or _iou(faces[index], track[-1][1]) > iou_threshold:
                    track.append((frame, faces.pop(index)))
                index += 1  # the list iterator moves on: after a removal it skips the next face
        if not track:
            return tracks
        if len(track) > min_track:
            frames = np.array([f for f, _ in track])
            every, boxes = interpolate_boxes(frames, np.array([b for _, b in track]))
            if max(np.mean(boxes[:, 2] - boxes[:, 0]), np.mean(boxes[:, 3] - boxes[:, 1])) > min_face_size:
                tracks.append(FaceTrack(every, boxes))


def median_filter(values: np.ndarray, kernel: int = MEDIAN_KERNEL) -> np.ndarray:
    """scipy.signal.medfilt(values, kernel): the middle of each window, the signal padded with zeros."""
    values = np.asarray(values, dtype=np.float64)
    half = kernel // 2
    padded = np.concatenate([np.zeros(half), values, np.zeros(half)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernel)
    return np.sort(windows, axis=1)[:, half]


def smoothed_boxes(track: FaceTrack) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """crop_video's dets: the box centre x, y and half its larger side, each median-filtered over 13 frames."""
    b = track.boxes
    s = [max((d[3] - d[1]), (d[2] - d[0])) / 2 for d in b]
    y = [(d[1] + d[3]) / 2 for d in b]
    x = [(d[0] + d[2]) / 2 for d in b]
    return median_filter(x), median_filter(y), median_filter(s)


def crop_face(frame: np.ndarray, x: float, y: float, s: float, crop_scale: float = CROP_SCALE) -> np.ndarray:
    """One frame's crop around centre (x, y), half size s, as crop_video cuts it: the frame padded by
    int(s·(1 + 2·crop_scale)) with grey 110, rows from y − s to y + s·(1 + 2·crop_scale) and columns
    x ± s·(1 + crop_scale) (mouth low in the crop), resized to 224x224. Channels stay in the frame's order."""
    bsi = int(s * (1 + 2 * crop_scale))
    padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), "constant", constant_values=(PAD_VALUE, PAD_VALUE))
    my, mx = y + bsi, x + bsi
    face = padded[int(my - s):int(my + s * (1 + 2 * crop_scale)),
                  int(mx - s * (1 + crop_scale)):int(mx + s * (1 + crop_scale))]
    if face.shape[0] == 0 or face.shape[1] == 0:
        raise ValueError(f"the face box centred at ({x:.1f}, {y:.1f}), half size {s:.1f}, lies outside the "
                         f"{frame.shape[1]}x{frame.shape[0]} frame: nothing to crop.")
    return resize_linear(face, CROP_SIZE, CROP_SIZE)


def _check_frame(frame: np.ndarray, index: int) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        described = f"{frame.dtype} {tuple(frame.shape)}" if isinstance(frame, np.ndarray) else type(frame).__name__
        raise ValueError(f"frame {index}: face tracking takes RGB uint8 [H, W, 3] frames; got {described}.")
    return frame


def detect_video(detector: S3FD, frames: Iterable[np.ndarray], scale: float = DETECTION_SCALE,
                 conf_th: float = DETECTION_THRESHOLD) -> list[np.ndarray]:
    """S3FD on every RGB uint8 frame as run_pipeline's inference_video calls it: float64 [k, 5] rows each."""
    return [detector.detect_faces(_check_frame(frame, i), conf_th=conf_th, scales=[scale])
            for i, frame in enumerate(frames)]


def crop_tracks(frames: Iterable[np.ndarray], tracks: Sequence[FaceTrack],
                crop_scale: float = CROP_SCALE) -> list[TrackCrops]:
    """crop_video for every track in one pass over the RGB uint8 frames: BGR uint8 [n, 224, 224, 3] crops."""
    smooth = [smoothed_boxes(t) for t in tracks]
    spans = [(int(t.frames[0]), int(t.frames[-1])) for t in tracks]
    crops: list[list[np.ndarray]] = [[] for _ in tracks]
    seen = 0
    for index, frame in enumerate(frames):
        seen = index + 1
        inside = [k for k, (first, last) in enumerate(spans) if first <= index <= last]
        if inside:
            _check_frame(frame, index)
        for k in inside:
            x, y, s = smooth[k]
            i = index - spans[k][0]
            crops[k].append(crop_face(frame, x[i], y[i], s[i], crop_scale)[..., ::-1])  # RGB -> cv2's BGR
    result = []
    for t, (x, y, s), out, (_, last) in zip(tracks, smooth, crops, spans):
        if seen <= last:
            raise ValueError(f"the video gave {seen} frames, and a face track runs to frame {last}: give the same "
                             f"frames as to detection.")
        result.append(TrackCrops(t, x, y, s, np.ascontiguousarray(np.stack(out))))
    return result


def face_track_crops(open_frames: Callable[[], Iterable[np.ndarray]], detector: S3FD, *,
                     scale: float = DETECTION_SCALE, conf_th: float = DETECTION_THRESHOLD,
                     min_track: int = MIN_TRACK, min_face_size: float = MIN_FACE_SIZE,
                     num_failed_det: int = NUM_FAILED_DET, crop_scale: float = CROP_SCALE) -> list[TrackCrops]:
    """The whole of run_pipeline's face part on one shot: `open_frames()` gives the video's RGB uint8 frames at
    25 fps, and is called twice (detection, then cropping) so the frames need not be held in memory. Raises
    NoFaceTrackError, saying why, when no track survives."""
    detections = detect_video(detector, open_frames(), scale, conf_th)
    n = len(detections)
    if n < min_track:
        raise NoFaceTrackError(
            f"lip sync cannot be scored: the video has {n} frames ({n / FRAME_RATE:.2f} s at {FRAME_RATE} fps) and "
            f"SyncNet's face tracking (syncnet_python's run_pipeline) needs a shot of at least {min_track} frames "
            f"({min_track / FRAME_RATE:g} s).")
    tracks = track_shot(detections, num_failed_det=num_failed_det, min_track=min_track,
                        min_face_size=min_face_size)
    if not tracks:
        with_face = sum(len(d) > 0 for d in detections)
        sides = [max(r[2] - r[0], r[3] - r[1]) for d in detections for r in d]
        found = (f"S3FD found a face in {with_face} of {n} frames" +
                 (f" (boxes {min(sides):.0f} to {max(sides):.0f} px on their larger side)" if sides else ""))
        raise NoFaceTrackError(
            f"lip sync cannot be scored: no face could be tracked in the video. {found}; a track needs a face in "
            f"more than {min_track} frames, none missing for more than {num_failed_det} frames in a row, each "
            f"overlapping the last by IOU > {IOU_THRESHOLD}, and boxes over {min_face_size:g} px on average "
            f"(detection runs at scale {scale:g} with confidence > {conf_th:g}).")
    return crop_tracks(open_frames(), tracks, crop_scale)
