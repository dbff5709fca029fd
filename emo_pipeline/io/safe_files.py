"""The one way the pack writes files: in a folder checked to be a real folder, through a temporary file created
exclusively and never through a link (O_CREAT | O_EXCL | O_NOFOLLOW), moved into place atomically; clean-up that
removes only names it was given inside its folder and never follows a link.

Folders of ours that others may share (a render's resume state beside a team's output) are made owner-only, and
one that is a link, not a folder or not the current user's is refused rather than written into.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import NamedPlainly

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafePath(NamedPlainly, OSError):
    """A place the pack will not write to or remove from (a link, not a folder, not ours), said plainly."""


def real_folder(folder: str | Path, create: bool = True) -> Path:
    """`folder` as a real folder (made, with its parents, when absent): a link at its name, or a file, is refused."""
    folder = Path(folder)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        if not create:
            raise
        folder.mkdir(parents=True, exist_ok=True)
        info = folder.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise UnsafePath(f"{folder} is a link, not a folder: nothing is written through it. Remove the link or "
                         "choose another folder.")
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafePath(f"{folder} is a file, not a folder: choose another place.")
    return folder


def private_folder(folder: str | Path) -> Path:
    """A folder only the current user may enter (0700), made by us or found as we made it: one that is a link,
    a file, or owned by another user is refused."""
    folder = Path(folder)
    real_folder(folder.parent)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:
        pass
    if ours(folder).st_mode & 0o077:
        os.chmod(folder, 0o700)
    return folder


def ours(folder: str | Path) -> os.stat_result:
    """The status of `folder`, a real folder of the current user's: a link, a file or another user's is refused."""
    folder = real_folder(folder, create=False)
    info = folder.lstat()
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise UnsafePath(f"{folder} belongs to another user: it is not used. Remove it, or choose another place.")
    return info


def plain_name(name: object) -> bool:
    """A file name and nothing else: no separator, no `..`, no absolute path, no NUL, not empty."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
            and "\0" not in name and len(name.encode()) <= 255)


def open_new(path: str | Path, mode: int = 0o600) -> BinaryIO:
    """A new file at `path` for writing: created exclusively, never through a link left at its name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, mode)
    return os.fdopen(fd, "wb")


def open_append(path: str | Path, mode: int = 0o644) -> BinaryIO:
    """`path` for appending (made when absent), never through a link left at its name."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | NOFOLLOW, mode)
    return os.fdopen(fd, "ab")


def write_atomic(path: str | Path, data: bytes | None = None, write: Callable[[BinaryIO], None] | None = None,
                 mode: int = 0o644) -> Path:
    """Write `data` (or what `write(file)` writes) to `path` whole or not at all: into a temporary file of a
    random name beside it, flushed to disk, then renamed over `path` (a rename replaces a link at `path` itself,
    never the file it points to). The folder must be a real one."""
    path = Path(path)
    real_folder(path.parent, create=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open_new(tmp, mode) as f:
            if write is not None:
                write(f)
            else:
                f.write(data or b"")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        remove_file(tmp)
    return path


def remove_file(path: str | Path) -> None:
    """Remove the name `path` (a link is removed as a link; what it points to is never touched)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def remove_folder(folder: str | Path) -> None:
    """Remove a folder of ours and everything in it, without following any link inside it; a link (or file) at
    the folder's own name is left alone."""
    folder = Path(folder)
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        return
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            remove_folder(entry.path)
        else:
            remove_file(entry.path)
    try:
        os.rmdir(folder)
    except OSError:
        pass  # something appeared meanwhile: it is left
