"""EMO Load Face Keypoints: V-Express's head motion from a driving video (EMO_FACE_KEYPOINTS), for the samplers'
face_keypoints input. Without it a V-Express model draws the photo's own keypoints in every frame (fix_face)."""

from __future__ import annotations

from dataclasses import dataclass

from ..emo_pipeline.poses.face_keypoint_sequence import STRATEGIES, FaceKeypointSequence, keypoints_from_frames
from ..emo_pipeline.poses.from_video import uint8_frames
from ..emo_pipeline.poses.sequence import PoseError
from .face import face_analyzer
from .notify import relays_warnings
from .poses import driving_frames, frame_progress

FACE_KEYPOINTS = "EMO_FACE_KEYPOINTS"
MOVING = [s for s in STRATEGIES if s != "fix_face"]
SIZE, FPS = 512, 30.0  # V-Express's frame size and rate: the samplers rescale and re-time them to the model's


@dataclass(frozen=True)
class DrivingKeypoints:
    """What flows along EMO_FACE_KEYPOINTS wires: the driving video's keypoints and how they move the photo's face."""

    sequence: FaceKeypointSequence
    retarget: str


class EMOLoadFaceKeypoints:
    DESCRIPTION = ("V-Express's head motion: the eyes and nose of the face in a driving video (found by SCRFD, from "
                   "models/emo's face models), moved onto the photo's face as retarget says. Connect to the sampler's "
                   "face_keypoints input. Without it V-Express keeps the head still (its fix_face).")
    CATEGORY = "EMO"
    FUNCTION = "load"
    RETURN_TYPES = (FACE_KEYPOINTS,)
    RETURN_NAMES = ("face_keypoints",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "retarget": (MOVING, {"default": "no_retarget", "tooltip": "As V-Express's inference.py: "
                             "no_retarget draws the video's keypoints where they are (the same person, framed alike); "
                             "offset_retarget moves the photo's keypoints by half the video's nose motion, mirrored, "
                             "as its code does; naive_retarget scales the video's face onto the photo's."}),
            },
            "optional": {
                "video": ("VIDEO", {"tooltip": "A video of a talking face (Load Video): one face in every frame."}),
                "frames": ("IMAGE", {"tooltip": "Used when no video is connected: the driving video's frames at 30 fps."}),
            },
        }

    @relays_warnings
    def load(self, retarget: str, video=None, frames=None):
        if retarget not in MOVING:
            raise PoseError(f"EMO Load Face Keypoints: retarget {retarget!r} is not known: choose one of "
                            f"{', '.join(MOVING)}.")
        images, rate = driving_frames("EMO Load Face Keypoints", video, frames, FPS)
        on_frame = frame_progress(max(1, round(images.shape[0] * FPS / rate)))
        sequence = keypoints_from_frames(uint8_frames(images.split(16)), rate, face_analyzer(), size=SIZE, fps=FPS,
                                         on_frame=on_frame)
        return (DrivingKeypoints(sequence, retarget),)
