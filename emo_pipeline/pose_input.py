"""EchoMimic v2's hand poses as a render takes them, for the nodes and the command line alike: a demo sequence found
by name in a model folder's echomimic_v2/poses/, a pose folder or a .npz read; the sequence made ready for one render
(as long as the video, placed for the model's frame size) with the line that says how; and what is said when a model
needs poses and has none, or is given poses it does not use.

Nothing heavy at import time (the command line's parser reads POSE_EXTENSIONS before torch is loaded): the pose
modules are imported by the functions that read or change a sequence.
"""

from __future__ import annotations

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
                         "or POSE_KEYPOINT from a DWPose Estimator node)",
                         "give --poses: a demo sequence's name (a folder in the model folder's echomimic_v2/poses/), "
                         "a pose folder (0.npy, 1.npy, …) or a .npz") + ".")


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

