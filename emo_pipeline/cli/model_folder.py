"""The command line's model folder: where `download` puts files by default and where `generate --model NAME`,
`inspect NAME`, `upscale` and a batch job look, so that `download hallo` then `generate --model hallo` works from
any folder without a path.

Decided from where the package is, not from the current folder:
* the pack in ComfyUI's custom_nodes/ (ComfyUI/custom_nodes/<pack>/emo_pipeline): ComfyUI's models/emo, the folder
  the nodes read (a folder extra_model_paths.yaml adds is the nodes' only: give it as --to);
* anywhere else (a clone, `pip install -e .`, a wheel): the user's ~/.cache/emo-portrait/models ($XDG_CACHE_HOME
  when set), as Hugging Face keeps its cache: gigabytes of weights stay out of the clone (and out of its `git
  status`), and every clone and environment of the same user shares them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# not resolved: a pack linked into custom_nodes/ and started through that path keeps its place there
PACKAGE = Path(os.path.abspath(__file__)).parents[1]


def looks_like_comfyui(folder: Path) -> bool:
    """ComfyUI's root (its code, or the desktop app's base folder with models/ beside custom_nodes/)."""
    return (folder / "comfy").is_dir() or (folder / "folder_paths.py").is_file() or (folder / "models").is_dir()


def default_model_folder(package: Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The default model folder, absolute, for the package at `package` (the emo_pipeline folder; default: this
    one)."""
    environ = os.environ if environ is None else environ
    pack = Path(os.path.abspath(package or PACKAGE)).parent
    if pack.parent.name == "custom_nodes" and looks_like_comfyui(pack.parent.parent):
        return pack.parent.parent / "models" / "emo"
    cache = Path(environ["XDG_CACHE_HOME"]) if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return cache / "emo-portrait" / "models"


def model_argument(model: Path) -> str:
    """How to name a model for --model: its bare name when it is in the default model folder, else its path."""
    model = Path(os.path.abspath(model))
    return model.name if model.parent == default_model_folder() else str(model)


def resolve_model(value: str | None, base: Path | None = None) -> str | None:
    """--model (or inspect's checkpoint) as given when that path exists (relative to `base`, default the current
    folder), else the same name in the default model folder when it is there: `--model hallo` after
    `download hallo`. Unchanged when neither exists (the caller names the problem)."""
    if not value:
        return value
    given = Path(value).expanduser()
    if given.is_absolute():
        return str(given)
    given = given if base is None else base / given
    if given.exists():
        return str(given)
    beside = default_model_folder() / value
    return str(beside) if beside.exists() else str(given)


def pose_search_folders(model: str | None) -> list[Path]:
    """Where --poses NAME is looked for: echomimic_v2/poses/ in --model's own download folder (its poses/, e.g.
    models/emo/echomimic_v2/poses for --model echomimic_v2) and under the folder holding it, then the default
    model folder's echomimic_v2/poses/."""
    from ..pose_input import POSES_FOLDER, poses_folder

    folders: list[Path] = []
    if model:
        home = Path(os.path.abspath(model))
        home = home if home.is_dir() else home.parent
        folders += [home / POSES_FOLDER[-1], poses_folder(home.parent)]
    folders.append(poses_folder(default_model_folder()))
    return list(dict.fromkeys(folders))


def dwpose_search_folders(model: str | None) -> list[Path]:
    """Model folders whose dwpose/ may hold DWPose's models: the one holding --model's download (models/emo for
    --model models/emo/echomimic_v2), then the default model folder."""
    folders: list[Path] = []
    if model:
        home = Path(os.path.abspath(model))
        folders.append((home if home.is_dir() else home.parent).parent)
    folders.append(default_model_folder())
    return list(dict.fromkeys(folders))


def resolve_poses(value: str | None, model: str | None = None, base: Path | None = None) -> str | None:
    """--poses as given when that path exists (relative to `base`, default the current folder), else the demo
    sequence of that name in pose_search_folders (a folder, or a .npz with or without its suffix). Unchanged when
    none exists (the caller names the problem)."""
    from ..pose_input import named_pose_path

    if not value:
        return value
    given = Path(value).expanduser()
    if not given.is_absolute() and base is not None:
        given = base / given
    if given.exists():
        return str(given)
    for folder in pose_search_folders(model):
        found = named_pose_path(folder, value)
        if found is not None:
            return str(found)
    return value
