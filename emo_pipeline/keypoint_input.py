"""V-Express's face keypoints for a render, for the nodes and the command line: the photo's own (fix_face, its
default: a still head), or a driving video's or keypoint file's retargeted to the photo (no_retarget,
offset_retarget, naive_retarget: poses/face_keypoint_sequence.py).

The photo's keypoints are found on the portrait as the model sees it (the square picture at its size, the
ReferenceNet's input), so the drawn eyes and nose lie on the face the reference shows whatever the photo's shape;
at a square photo of the model's size this is V-Express's own (its inference.py resizes the photo to 512² and
runs SCRFD on it).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from .config import EMOConfig
    from .poses.face_keypoint_sequence import FaceFinder, FaceKeypointSequence

KEYPOINT_SUFFIXES = (".pth", ".pt", ".npz")


def uses_face_keypoints(config: "EMOConfig") -> bool:
    """Whether the model draws face keypoints for every frame (V-Express)."""
    return config.spec.locator_input == "face_keypoints"


def driving_keypoints(path: str | Path, analyzer: "FaceFinder", size: int, fps: float,
                      on_frame: Callable[[int], None] | None = None) -> "FaceKeypointSequence":
    """A driving video's keypoints (found by SCRFD at `fps`), or a keypoint file's (V-Express's kps.pth, or our
    .npz)."""
    from .pose_input import is_video
    from .poses.face_keypoint_sequence import keypoints_from_video, load_face_keypoints
    from .poses.sequence import PoseError

    path = Path(path)
    if not path.is_file():
        raise PoseError(f"{path}: no such file. Give a driving video, or a keypoint file (.pth as V-Express's "
                        "kps.pth, or .npz).")
    if is_video(path):
        return keypoints_from_video(path, analyzer, size=size, fps=fps, on_frame=on_frame)
    if path.suffix.lower() not in KEYPOINT_SUFFIXES:
        raise PoseError(f"{path.name}: neither a video nor a keypoint file (.pth as V-Express's kps.pth, or .npz).")
    return load_face_keypoints(path, frame_size=size, fps=fps)


def keypoints_for_render(config: "EMOConfig", portrait_image: torch.Tensor, num_frames: int, analyzer: "FaceFinder",
                         fps: float, strategy: str = "fix_face",
                         driving: "FaceKeypointSequence | None" = None) -> tuple["FaceKeypointSequence", str]:
    """The keypoint sequence a render of `num_frames` frames draws, and the line that says where it comes from.
    `portrait_image`: the portrait as the model sees it, [S, S, 3] in 0..1 (Portrait.image)."""
    from .poses.face_keypoint_sequence import face_keypoints_for_video, reference_keypoints

    size = config.sample_size
    photo = (portrait_image[..., :3].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    reference = reference_keypoints(np.ascontiguousarray(photo), size, analyzer)
    return face_keypoints_for_video(reference, num_frames, strategy, driving, frame_size=size, fps=fps)
