"""EMO Load Poses and EMO Preview Poses: EchoMimic v2's hand-pose sequence (EMO_POSES) from one of its demo
sequences in models/emo/echomimic_v2/poses/ or from ComfyUI's POSE_KEYPOINT, fitted to the photo, and drawn to be
seen before a long render. The samplers extend it to the audio's length (pose_extension, chosen here, travels
with it)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.download import DOWNLOADS
from ..emo_pipeline.pose_input import (POSE_EXTENSIONS, dwpose_paths, fit_poses_to_photo, load_poses, missing_dwpose,
                                       named_pose_path, pose_names, poses_folder, poses_from_video_frames,
                                       where_demo_poses_go)
from ..emo_pipeline.poses.draw import draw_hands
from ..emo_pipeline.poses.keypoints import from_pose_keypoint
from ..emo_pipeline.poses.sequence import PoseError, PoseSequence
from .downloads import entry, fetch
from .model_loader import FOLDER
from .notify import relays_warnings

POSES = "EMO_POSES"
FROM_KEYPOINTS = "from keypoints"
FROM_VIDEO = "from driving video"  # followed by " + download: dwpose (…)" while DWPose's models are absent
DWPOSE = "dwpose"
NO_DEMO_POSES = "(no demo poses in models/emo/echomimic_v2/poses)"
FRAME_SIZE = 768  # EchoMimic v2's frame: sequences are placed for it here, and for the model's own by the samplers
FRAME_RATE = 24.0  # EchoMimic v2's: a driving video is sampled at it


@dataclass(frozen=True, eq=False)
class LoadedPoses(PoseSequence):
    """What flows along EMO_POSES wires: the pose sequence as loaded and aligned (not yet extended to any audio),
    with how the samplers are to extend it."""

    extension: str = "pingpong"


def with_extension(poses: PoseSequence, extension: str) -> LoadedPoses:
    return LoadedPoses(**{f.name: getattr(poses, f.name) for f in fields(PoseSequence)}, extension=extension)


def extension_of(poses: PoseSequence | None) -> str:
    """The extension EMO Load Poses chose for a sequence (pingpong for one from elsewhere)."""
    return getattr(poses, "extension", POSE_EXTENSIONS[0])


def pose_folders() -> list[Path]:
    """echomimic_v2/poses under each models/emo folder (extra_model_paths.yaml's too), the first being where new
    sequences are to go."""
    return [poses_folder(base) for base in folder_paths.get_folder_paths(FOLDER)]


def demo_names() -> list[str]:
    names: list[str] = []
    for folder in pose_folders():
        names += [n for n in pose_names(folder) if n not in names]
    return names


def dwpose_files() -> tuple[Path, Path] | None:
    """DWPose's two models in a models/emo/dwpose/, if there."""
    return dwpose_paths(folder_paths.get_folder_paths(FOLDER))


def video_choice() -> str:
    """The driving-video entry: picking it while DWPose's models are absent asks for their download (once)."""
    return FROM_VIDEO if dwpose_files() else f"{FROM_VIDEO} + {entry(DWPOSE)}"


def driving_frames(node: str, video, frames, fps: float) -> tuple[torch.Tensor, float]:
    """A driving video's frames [F, H, W, C] and their rate: a connected VIDEO's own, else IMAGE frames taken to be at
    `fps`; neither, or no frame, is said plainly."""
    if video is not None:
        parts = video.get_components()
        images, rate = parts.images, float(parts.frame_rate)
    elif frames is not None:
        images, rate = frames, fps
    else:
        raise PoseError(f"{node}: neither video nor frames is connected: connect a Load Video's VIDEO (or the video's "
                        "frames as IMAGE).")
    if images.ndim != 4 or images.shape[0] == 0:
        raise PoseError(f"{node}: the driving video's frames have shape {tuple(images.shape)}, not [frames, height, "
                        "width, channels]: connect a video with at least one frame.")
    return images, rate


def frame_progress(total: int) -> Callable[[int], None]:
    """on_frame(done) for a frame-by-frame job of `total` frames: ComfyUI's bar moves, and Cancel stops there."""
    bar = comfy.utils.ProgressBar(total)

    def on_frame(done: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(min(done, total), total)
    return on_frame


def source_choices() -> list[str]:
    return (demo_names() or [NO_DEMO_POSES]) + [FROM_KEYPOINTS, video_choice()]


def no_demo_poses(name: str | None = None) -> str:
    folder = pose_folders()[0]
    first = (f"EMO Load Poses: no demo pose sequence '{name}' in {folder}" if name else
             f"EMO Load Poses: there are no demo pose sequences in {folder} yet")
    return (f"{first}. {where_demo_poses_go(folder)}, then refresh the node's list; or pick '{FROM_KEYPOINTS}' and "
            "connect a DWPose Estimator's POSE_KEYPOINT (hands enabled) to keypoints.")


class EMOLoadPoses:
    DESCRIPTION = ("EchoMimic v2's hand poses, which drive its gestures along with the audio: one of its demo pose "
                   "sequences (copied from its repository's assets/halfbody_demo/pose/<name>/ to "
                   "models/emo/echomimic_v2/poses/<name>/), or a DWPose Estimator's POSE_KEYPOINT. Scale and offset "
                   "fit the hands to the photo (check with EMO Preview Poses). Connect to the sampler's poses input; "
                   "the sampler makes the sequence as long as the audio, as pose_extension says.")
    CATEGORY = "EMO"
    FUNCTION = "load"
    RETURN_TYPES = (POSES,)
    RETURN_NAMES = ("poses",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "source": (source_choices(), {"tooltip": "A demo pose sequence: a folder of 0.npy, 1.npy, … (or a "
                           ".npz of ours) in models/emo/echomimic_v2/poses/, copied there from EchoMimic v2's "
                           "repository (assets/halfbody_demo/pose/<name>/); nothing is downloaded. 'from keypoints': "
                           "the keypoints input's hands instead."}),
                "pose_extension": (list(POSE_EXTENSIONS), {"default": POSE_EXTENSIONS[0], "tooltip": "How the "
                                   "sampler makes a sequence shorter than the audio as long: pingpong (forth and back, "
                                   "no jump), loop (from the start again), hold (the last pose kept). A longer one is "
                                   "cut. Here rather than on the samplers, so that their saved widgets stay as "
                                   "they were."}),
                "scale": ("FLOAT", {"default": 1.0, "min": 0.1, "max": 4.0, "step": 0.01, "tooltip": "Size of the "
                          "hands about the centre of the pose area (1: as recorded). Fit them to the person in the "
                          "photo; EMO Preview Poses shows the result."}),
                "offset_x": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01, "tooltip": "Moves "
                             "the hands right (negative: left), as a share of the pose area's width (0: as "
                             "recorded)."}),
                "offset_y": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.01, "tooltip": "Moves "
                             "the hands down (negative: up), as a share of the pose area's height (0: as "
                             "recorded)."}),
            },
            "optional": {
                "keypoints": ("POSE_KEYPOINT", {"tooltip": "Used with source 'from keypoints': a DWPose Estimator's "
                              "(comfyui_controlnet_aux) POSE_KEYPOINT of the driving video's frames, with detect_hand "
                              "enabled; one pose per frame."}),
                "video": ("VIDEO", {"tooltip": "Used with source 'from driving video': a video of a person "
                          "gesturing (Load Video). DWPose finds their hands in the frames the model's 24 fps needs, "
                          "as EchoMimic v2 made its demo poses."}),
                "frames": ("IMAGE", {"tooltip": "Used with source 'from driving video' when no video is connected: "
                           "the driving video's frames, one pose per image at the model's 24 fps (load them at 24 "
                           "fps)."}),
                "photo": ("IMAGE", {"tooltip": "The photo to animate: when connected (and DWPose's models are in "
                          "models/emo/dwpose), the poses are fitted to the body DWPose finds in it, so the hands move "
                          "about the person's own shoulders; scale and offset then adjust from there."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, source: str):
        """A demo sequence a saved workflow names but this machine lacks is said plainly (where to copy it)."""
        if source in (FROM_KEYPOINTS, NO_DEMO_POSES) or source.startswith(FROM_VIDEO) or source in demo_names():
            return True
        return no_demo_poses(source)

    @relays_warnings
    def load(self, source: str, pose_extension: str, scale: float, offset_x: float, offset_y: float,
             keypoints=None, video=None, frames=None, photo=None):
        if pose_extension not in POSE_EXTENSIONS:
            raise PoseError(f"EMO Load Poses: pose_extension {pose_extension!r} is not known: choose one of "
                            f"{', '.join(POSE_EXTENSIONS)}.")
        if source == FROM_KEYPOINTS:
            if keypoints is None:
                raise PoseError("EMO Load Poses: source is 'from keypoints' and nothing is connected to keypoints: "
                                "connect a DWPose Estimator's POSE_KEYPOINT (detect_hand enabled), or pick a demo "
                                "sequence.")
            poses = from_pose_keypoint(keypoints, frame_size=FRAME_SIZE)
        elif source.startswith(FROM_VIDEO):
            poses = self._from_video(source, video, frames)
        else:
            if keypoints is not None:
                warnings.warn(f"EMO Load Poses: source is the demo sequence '{source}'; the keypoints connected are "
                              f"ignored (pick '{FROM_KEYPOINTS}' to use them).", stacklevel=2)
            poses = load_poses(self._path(source), source=f"demo poses {source}")
        if photo is not None:
            poses = self._fitted(poses, photo)
        aligned = poses.aligned(scale, (offset_x, offset_y))
        if not bool(aligned.visible().any()):
            raise PoseError(f"EMO Load Poses: with scale {scale:g} and offset ({offset_x:g}, {offset_y:g}) no hand of "
                            f"{poses.source} stays inside the pose area: bring the offsets nearer 0 or the scale "
                            "nearer 1.")
        return (with_extension(aligned, pose_extension),)

    @staticmethod
    def _from_video(source: str, video, frames) -> PoseSequence:
        files = dwpose_files()
        if files is None and source != FROM_VIDEO:  # "from driving video + download: dwpose (…)": the request
            fetch(DOWNLOADS[DWPOSE])
            files = dwpose_files()
        if files is None:
            raise missing_dwpose(folder_paths.get_folder_paths(FOLDER), "EMO Load Poses' 'from driving video'")
        images, rate = driving_frames("EMO Load Poses", video, frames, FRAME_RATE)
        on_frame = frame_progress(max(1, round(images.shape[0] * FRAME_RATE / rate)))  # DWPose is slow a frame
        height, width = int(images.shape[1]), int(images.shape[2])
        return poses_from_video_frames(images.split(16), rate, height, width, files, fps=FRAME_RATE,
                                       source="driving video", on_frame=on_frame)

    @staticmethod
    def _fitted(poses: PoseSequence, photo) -> PoseSequence:
        files = dwpose_files()
        if files is None:
            warnings.warn("EMO Load Poses: the poses are not fitted to the photo, which needs DWPose's models: pick "
                          f"'{video_choice()}' once (it fetches them) or run `python -m emo_pipeline download "
                          "dwpose`. They are drawn as recorded, moved by scale and offset.", stacklevel=2)
            return poses
        try:
            fitted, line = fit_poses_to_photo(poses, photo[:1] if photo.ndim == 4 else photo, files)
        except PoseError as error:
            warnings.warn(f"EMO Load Poses: the poses are not fitted to the photo: {error}", stacklevel=2)
            return poses
        logging.getLogger(__name__).info("EMO Load Poses: %s", line)
        return fitted

    @staticmethod
    def _path(source: str) -> Path:
        if source == NO_DEMO_POSES:
            raise PoseError(no_demo_poses())
        for folder in pose_folders():
            path = named_pose_path(folder, source)
            if path is not None:
                return path
        raise PoseError(no_demo_poses(source))


class EMOPreviewPoses:
    DESCRIPTION = ("Draws EMO Load Poses' hands as EchoMimic v2 sees them (its pose images: each hand's bones and "
                   "joints on black, placed in the frame), for some frames spread over the sequence, optionally "
                   "over the photo resized to the frame: see where the hands sit before a long render.")
    CATEGORY = "EMO"
    FUNCTION = "preview"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "poses": (POSES, {"tooltip": "From EMO Load Poses."}),
                "frames": ("INT", {"default": 24, "min": 1, "max": 256, "tooltip": "How many frames to draw, "
                           "evenly spaced from the sequence's first to its last (all of them when it has fewer)."}),
            },
            "optional": {
                "image": ("IMAGE", {"tooltip": "The photo (as given to EMO ReferenceNet Encode): resized to the frame "
                          "as the model takes it, with the hands drawn over it."}),
            },
        }

    @relays_warnings
    def preview(self, poses, frames: int, image=None):
        if not isinstance(poses, PoseSequence):
            raise PoseError("EMO Preview Poses: poses is not a pose sequence: connect EMO Load Poses.")
        count = len(poses)
        shown = min(int(frames), count)
        if shown < 1:
            raise PoseError("EMO Preview Poses: frames must be at least 1.")
        indices = torch.linspace(0, count - 1, shown).round().long().unique()
        drawn = rearrange(poses.tensor_frames(indices, draw_hands), "c f h w -> f h w c")
        if image is None:
            return (drawn,)
        photo = (image[0] if image.ndim == 4 else image)[..., :3].float()
        size = poses.frame_size
        photo = F.interpolate(rearrange(photo, "h w c -> 1 c h w"), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False).clamp(0, 1)
        photo = rearrange(photo, "1 c h w -> 1 h w c")
        hands = drawn.amax(-1, keepdim=True) > 0  # where a bone or joint is drawn
        return (torch.where(hands, drawn, photo),)
