"""A full disk said plainly: the folder, the space there and the space needed, instead of errno 28 from
deep inside FFmpeg or a write. Partial files are removed by their writers; earlier files are untouched."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from .errors import NamedPlainly

MiB = 2**20


class DiskFullError(NamedPlainly, OSError):
    """No room left where a file is being written."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(folder: Path) -> int | None:
    """Free space where `folder` is (None when it cannot be told, e.g. the folder does not exist yet)."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def disk_full_error(folder: Path, what: str, needed: int) -> DiskFullError:
    """The error for `what` (a file's description) needing about `needed` bytes in `folder`."""
    free = free_bytes(folder)
    return DiskFullError(
        errno.ENOSPC,
        f"No space left in {folder} for {what}: it needs about {needed / MiB:.1f} MiB and "
        f"{(free or 0) / MiB:.1f} MiB are free there. Free some space or choose a folder on another disk; "
        "nothing written before was removed.")


def check_free_space(folder: Path, what: str, needed: int) -> None:
    """Refuse up front when a file of known size (`needed` bytes) cannot fit in `folder`."""
    free = free_bytes(folder)
    if free is not None and free < needed:
        raise disk_full_error(folder, what, needed)
