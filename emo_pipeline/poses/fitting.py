"""Fitting a pose sequence to the photo it will drive: one scale and one offset, the same for every frame, that put
the sequence's body where the photo's body is, so the hands move about the photo's own shoulders.

This is EchoMimic v2's own rule (get_video_pose_with_refimg in its preprocessing): the body keypoints it trusts
(nose, neck, shoulders, hips, knees, ankles, eyes, ears: not elbows or wrists, which the gestures move) of every
frame are matched to the photo's by a straight-line fit of the heights, the widths take the same scale in pixels
(so nothing is stretched), and the horizontal offset is the mean of what is left. Two differences, both to keep a
missed keypoint from pulling the fit: the sequence's points are used only where their own score is above 0.3 (the
reference uses only the photo's scores), and every frame with a body counts (the reference drops frames in which
DWPose saw more than one person).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .sequence import BODY_KEYPOINTS, PoseError, PoseSequence

FIT_POINTS = (0, 1, 2, 5, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17)  # OpenPose ids: the reference's choice (above)
SEEN = 0.3  # the score above which a keypoint counts as detected (DWPose's own drawing threshold)


def photo_square(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the photo's centred square: the part of a photo the model sees (portrait.to_rgb_square
    crops a photo that is not square to it)."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def fit_to_photo(poses: PoseSequence, photo_body: np.ndarray, photo_scores: np.ndarray,
                 photo_size: tuple[int, int]) -> tuple[PoseSequence, str]:
    """(the poses placed over the photo, the line that says how). photo_body: [18, 2] the photo's body keypoints in
    its pixels, photo_scores: [18]; photo_size: (height, width). The fitted sequence covers the whole frame (its
    area is the frame), as the photo does. A PoseError, naming the way out, when there is nothing to fit by."""
    if poses.body is None:
        raise PoseError(f"{poses.source} has no body keypoints, so it cannot be fitted to the photo's body: use "
                        "scale and offset instead (EMO Preview Poses shows the result), or take the poses from a "
                        "driving video or a DWPose Estimator, which give bodies.")
    photo_body = np.asarray(photo_body, np.float64).reshape(BODY_KEYPOINTS, 2)
    photo_scores = np.asarray(photo_scores, np.float64).reshape(BODY_KEYPOINTS)
    ids = [i for i in FIT_POINTS if photo_scores[i] > SEEN and np.isfinite(photo_body[i]).all()]
    if len(ids) < 2:
        raise PoseError(f"DWPose finds {'no' if not ids else 'only one'} body keypoint in the photo (of nose, neck, "
                        "shoulders, hips, eyes, ears), too few to fit the poses to: use a photo showing the head and "
                        "shoulders, or fit the poses by hand with scale and offset.")
    height_w = np.array([poses.area[1], poses.area[0]], np.float64)  # fractions of the area → its pixels (x, y)
    body = poses.body.double().numpy()[:, ids] * height_w
    seen = (poses.body_scores.double().numpy()[:, ids] > SEEN) & np.isfinite(body).all(-1)
    target = np.broadcast_to(photo_body[ids], body.shape)
    source, target = body[seen], target[seen]
    if len(source) < 2 or np.ptp(source[:, 1]) <= 0:
        raise PoseError(f"{poses.source}: too few body keypoints are seen in the poses' frames to fit them to the "
                        "photo: fit them by hand with scale and offset.")
    scale, shift_y = np.polyfit(source[:, 1], target[:, 1], 1)
    if not (np.isfinite(scale) and scale > 0):
        raise PoseError(f"the poses' body and the photo's do not match (a fitted scale of {scale:.3g}): fit the "
                        "poses by hand with scale and offset.")
    shift_x = float(np.mean(target[:, 0] - scale * source[:, 0]))
    top, left, side = photo_square(*photo_size)
    size = poses.frame_size

    def placed(points: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        pixels = points.double().numpy() * height_w * scale + [shift_x, shift_y]  # photo pixels
        frame = torch.from_numpy((pixels - [left, top]) / side).to(points.dtype)  # fractions of the square frame
        return torch.where((scores > 0).unsqueeze(-1), frame, points)

    body_fit = {"body": placed(poses.body, poses.body_scores)}
    fitted = replace(poses, hands=placed(poses.hands, poses.scores), area=(size, size), placement=(0, size, 0, size),
                     **body_fit)
    grown = scale * size / side  # how much bigger the poses are drawn in the frame than before
    line = (f"poses: fitted to the body in the photo ({len(ids)} keypoints of the photo, {len(source)} of the poses' "
            f"frames): drawn ×{grown:.2f}")
    return fitted, line
