"""EchoMimic v2's hand poses as a render takes them, for the nodes and the command line alike: a demo sequence found
by name in a model folder's echomimic_v2/poses/, a pose folder or a .npz read, or poses taken from a driving video
by DWPose; the poses fitted to the photo's body (DWPose again); the sequence made ready for one render (as long as
the video, placed for the model's frame size) with the line that says how; and what is said when a model needs
poses and has none, or is given poses it does not use.

Nothing heavy at import time (the command line's parser reads POSE_EXTENSIONS before torch is loaded): the pose
modules are imported by the functions that read or change a sequence.
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from .io.advice import where

if TYPE_CHECKING:
    from .config import EMOConfig
    from .poses.sequence import PoseError, PoseSequence

# a model folder's place for pose sequences: ComfyUI's models/emo/echomimic_v2/poses/<name>/, beside v2's download
POSES_FOLDER = ("echomimic_v2", "poses")
# how a sequence shorter than the audio is made as long (poses.sequence.EXTEND_MODES; tests hold the two equal)
POSE_EXTENSIONS = ("pingpong", "loop", "hold")
DWPOSE_FOLDER = "dwpose"  # models/emo/dwpose/: DWPose's two ONNX models (`download dwpose`)
DWPOSE_FILES = ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")  # the person detector, the whole-body keypoint model
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif")  # --poses given as a driving video
REPOSITORY = "https://github.com/antgroup/echomimic_v2"
REPOSITORY_POSES = "assets/halfbody_demo/pose/<name>/"
NPZ = ".npz"


def poses_folder(model_folder: str | Path) -> Path:
    """Where pose sequences are looked for by name under a model folder (models/emo, the command line's one)."""
    return Path(model_folder).joinpath(*POSES_FOLDER)


def is_pose_folder(path: Path) -> bool:
    return path.is_dir() and (path / "0.npy").is_file()


def pose_names(folder: str | Path) -> list[str]:
    """The sequences in a poses folder, by the names they are picked by: each folder holding 0.npy (EchoMimic v2's
    demo format) and each .npz (ours, save_pose_npz), sorted; hidden entries are left out."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    names = [p.name for p in folder.iterdir() if not p.name.startswith(".")
             and (is_pose_folder(p) or (p.suffix == NPZ and p.is_file()))]
    return sorted(names)


def named_pose_path(folder: str | Path, name: str) -> Path | None:
    """The sequence `name` names in a poses folder (a folder, or a .npz given with or without its suffix), or None.
    A name is one entry of the folder: one that is a path (a separator, '..') names nothing here."""
    if not name or name in (".", "..") or Path(name).name != name or "\\" in name or name.startswith("."):
        return None
    folder = Path(folder)
    candidates = [folder / name] + ([folder / (name + NPZ)] if not name.endswith(NPZ) else [])
    return next((c for c in candidates if is_pose_folder(c) or (c.suffix == NPZ and c.is_file())), None)


def where_demo_poses_go(folder: str | Path) -> str:
    """How to get EchoMimic v2's demo pose sequences into `folder` (a model folder's echomimic_v2/poses)."""
    return (f"EchoMimic v2's demo pose sequences come with its repository ({REPOSITORY}) as {REPOSITORY_POSES} "
            f"(folders of 0.npy, 1.npy, …): copy each such folder to {Path(folder)}/<name>/ (nothing is downloaded "
            "for you)")


def load_poses(path: str | Path, source: str | None = None) -> "PoseSequence":
    """A pose sequence from a pose folder (0.npy, 1.npy, …: EchoMimic v2's demo format) or a .npz written by
    save_pose_npz, checked."""
    from .poses.demo_files import load_pose_folder, load_pose_npz
    from .poses.sequence import PoseError

    path = Path(path)
    if path.is_dir():
        return load_pose_folder(path, source=source)
    if path.suffix.lower() == NPZ and path.is_file():
        return load_pose_npz(path, source=source)
    if not path.exists():
        raise PoseError(f"{path}: no such pose folder or file: give a pose folder (0.npy, 1.npy, … inside) or a "
                        ".npz of poses.")
    raise PoseError(f"{path} is neither a pose folder (0.npy, 1.npy, … inside) nor a .npz of poses: give one of "
                    "those.")


def dwpose_paths(folders: "list[str | Path]") -> tuple[Path, Path] | None:
    """DWPose's (detector, estimator) in the first of `folders` (model folders: models/emo) whose dwpose/ holds
    both, or None."""
    for folder in folders:
        paths = tuple(Path(folder) / DWPOSE_FOLDER / name for name in DWPOSE_FILES)
        if all(p.is_file() for p in paths):
            return paths
    return None


def missing_dwpose(folders: "list[str | Path]", what: str) -> "PoseError":
    """The error for `what` (e.g. "poses from a driving video") without DWPose's models: where they go, how to get
    them."""
    from .poses.sequence import PoseError

    place = Path(folders[0]) / DWPOSE_FOLDER if folders else Path(DWPOSE_FOLDER)
    return PoseError(f"{what} needs DWPose's two models ({', '.join(DWPOSE_FILES)}) in {place}, and they are not "
                     "there: " + where("pick 'from driving video + download: dwpose' in EMO Load Poses' source "
                                       "list once, which fetches them",
                                       f"run `python -m emo_pipeline download dwpose --to {Path(folders[0]) if folders else '.'}`"
                                       " (about 350 MB, once)") + ".")


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@functools.lru_cache(maxsize=2)
def dwpose_for(detector: Path, estimator: Path):
    """One DWPose per pair of model files, built when first asked for (its two sessions take ~0.4 GB) and kept:
    the command line's jobs and the nodes' runs share it."""
    from .poses.dwpose import DWPose

    return DWPose(detector, estimator)


def poses_from_video_frames(batches, source_fps: float, height: int, width: int, dwpose_files: tuple[Path, Path],
                            fps: float = 24.0, source: str = "driving video", on_frame=None) -> "PoseSequence":
    """The poses of a driving video's frames (batches of float [B, H, W, 3] in 0..1, decoded as they come), sampled at
    the model's `fps`: see poses.from_video."""
    from .poses.from_video import detect_video, poses_from_detections, uint8_frames

    found = detect_video(uint8_frames(batches), source_fps, fps, dwpose_for(*dwpose_files), on_frame)
    return poses_from_detections(found, height, width, fps=fps, source=source)


def poses_from_video_file(path: str | Path, dwpose_files: tuple[Path, Path], fps: float = 24.0,
                          on_frame=None) -> "PoseSequence":
    """The poses of the driving video at `path` (PyAV), DWPose running on the frames the model's rate needs."""
    from .io.media import iter_video_frames, probe_video
    from .poses.sequence import PoseError

    try:
        info = probe_video(path)
    except Exception as error:  # noqa: BLE001 - PyAV says unreadable files in many ways
        raise PoseError(f"{path} cannot be read as a video ({error}): give a video file (MP4, MOV, WebM, …) of the "
                        "person whose gestures the portrait is to follow.") from None
    return poses_from_video_frames(iter_video_frames(path), info["fps"], info["height"], info["width"], dwpose_files,
                                   fps=fps, source=f"driving video {Path(path).name}", on_frame=on_frame)


def fit_poses_to_photo(poses: "PoseSequence", photo, dwpose_files: tuple[Path, Path]) -> tuple["PoseSequence", str]:
    """`poses` fitted to the body DWPose finds in `photo` (float [H, W, C] in 0..1, as the nodes and load_image give
    it), and the line that says so: see poses.fitting."""
    from .poses.fitting import fit_to_photo
    from .poses.from_video import photo_body, uint8_frames
    from .portrait import as_rgb

    image = next(uint8_frames([as_rgb(photo)[None]]))
    body, scores = photo_body(dwpose_for(*dwpose_files)(image))
    return fit_to_photo(poses, body, scores, image.shape[:2])


def uses_poses(config: "EMOConfig") -> bool:
    """Whether the model is driven by a hand-pose sequence (EchoMimic v2)."""
    return config.spec.locator_input == "poses"


def missing_poses(config: "EMOConfig") -> "PoseError":
    """The error for a pose-driven model given no poses: what to connect in ComfyUI, what to give on the command
    line."""
    from .poses.sequence import PoseError

    return PoseError(f"{config.spec.title} is driven by a hand-pose sequence as well as the audio, and none was "
                     "given: " + where(
                         "connect EMO Load Poses to the sampler's poses input (one of EchoMimic v2's demo sequences, "
                         "a driving video, or POSE_KEYPOINT from a DWPose Estimator node)",
                         "give --poses: a demo sequence's name (a folder in the model folder's echomimic_v2/poses/), "
                         "a pose folder (0.npy, 1.npy, …), a .npz or a driving video") + ".")


def ignored_poses(config: "EMOConfig", what: str) -> str:
    """The one line said when poses are given to a model that does not read them."""
    return f"{config.spec.title} models are not driven by hand poses: the poses given ({what}) are ignored."


def poses_for_render(config: "EMOConfig", poses: "PoseSequence | None", num_frames: int, mode: str = "pingpong",
                     fps: float | None = None) -> tuple["PoseSequence | None", str]:
    """(the poses the sampler takes, the line to say once). For a pose-driven model: `poses` made exactly
    `num_frames` long (cut, or extended by `mode`) and placed for the model's frame size; `fps`: the video's rate,
    at which the poses play one per frame (the line says the audio's seconds at it). For another model: None, and a
    line saying the poses are ignored when some were given. A pose-driven model given none: missing_poses."""
    if not uses_poses(config):
        return None, ignored_poses(config, poses.source) if poses is not None else ""
    if poses is None:
        raise missing_poses(config)
    if fps is not None and fps != poses.fps:
        poses = replace(poses, fps=float(fps))
    extended, line = poses.extend_to(num_frames, mode)
    return extended.for_frame_size(config.sample_size), line

