"""Checks before any model loads, so that minutes of loading never end in a traceback about the output: the
folder an output goes to exists or can be made and takes a file, the names we make there fit the file system,
and the device asked for is one this torch has."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from ..io.safe_files import UnsafePath, open_new, real_folder, remove_file

# The longest names a render makes beside its output: the resume folder and the writer's partial file.
RESUME_EXTRA = len("..emo-resume")
PARTIAL_EXTRA = len("..4194304-0123abcd.partial.mp4")


def check_output(path: str | Path, option: str, resume: bool = False) -> Path:
    """`path` (the file an option names) can be written: a ValueError naming the option and the fix if not."""
    path = Path(path).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    longest = len(path.stem.encode()) + max(PARTIAL_EXTRA, RESUME_EXTRA if resume else 0, len(path.suffix))
    check_folder(folder, option, longest_name=max(longest, len(path.name.encode())))
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: give a file name in it, e.g. {path / 'video.mp4'}.")
    return path


def check_folder(folder: str | Path, option: str, longest_name: int = 0) -> Path:
    """`folder` exists (or is made) and a file can be created in it, with names of `longest_name` bytes."""
    folder = Path(folder).expanduser()
    for parent in [folder, *folder.parents]:  # the nearest part that exists must be a folder
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ValueError(f"{option}: {parent} is a file, so {folder} cannot be a folder below it; choose "
                                 "another place.")
            break
    try:
        real = folder.resolve()
        real.mkdir(parents=True, exist_ok=True)
        real_folder(real)
        limit = os.pathconf(real, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
        if longest_name > limit:
            raise ValueError(f"{option}: the name is too long for the file system in {folder} (names there are "
                             f"at most {limit} bytes, and this one needs {longest_name} with what the render adds "
                             "beside it); choose a shorter name.")
        probe = real / f".emo-write-check-{os.getpid()}"
        remove_file(probe)
        open_new(probe).close()
        remove_file(probe)
    except UnsafePath as err:
        raise ValueError(f"{option}: {err}") from None
    except OSError as err:
        reason = {errno.EROFS: "it is on a read-only file system", errno.EACCES: "you may not write there",
                  errno.EPERM: "you may not write there", errno.ENOSPC: "its disk is full",
                  errno.ENAMETOOLONG: "the path is too long"}.get(err.errno, err.strerror)
        raise ValueError(f"{option}: cannot write in {folder} ({reason}); choose a folder you can write to.") from None
    return folder


def check_device(name: str) -> str:
    """A --device value this torch can use: `auto` becomes cuda when a GPU is seen, else cpu."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N (a GPU's index) or auto.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build of torch" if torch.version.cuda is None else "no GPU is visible to torch"
            raise ValueError(f"--device {name}: {build}, so CUDA cannot be used. Use --device cpu (or auto), or "
                             "install torch with CUDA for your GPU.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: torch sees {torch.cuda.device_count()} GPU(s), numbered from 0.")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: this torch has no MPS (Apple GPU) support here; use --device cpu.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: this pack runs on cpu, cuda or mps.")
    return name
