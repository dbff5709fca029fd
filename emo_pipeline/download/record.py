"""The record of placed files (.emo-download/placed.json): what the hub said of each file placed, and that it
passed its content check. It is read as input from outside: an entry of the wrong form counts as no entry, and an
entry whose file changed since (size or modification time) stands for nothing until the file is checked again."""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path
from typing import Callable

from ..io.safe_files import write_atomic
from .errors import DownloadError

# Bumped when the content check learns something new: entries of an older check are checked again.
CHECK_VERSION = 1
HEX = set("0123456789abcdef")


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) in (40, 64) and set(value) <= HEX


def valid_entry(entry: object) -> bool:
    """An entry of the form we write: hub hash, commit, size and time stamp (hash and commit may be absent for
    files checked by content alone, offline)."""
    if not isinstance(entry, dict):
        return False
    sizes = all(type(entry.get(k)) is int and entry[k] >= 0 for k in ("size", "mtime_ns"))
    hashes = all(entry.get(k) is None or _is_hash(entry[k]) for k in ("etag", "commit"))
    return sizes and hashes and type(entry.get("checked")) is int and isinstance(entry.get("revision", ""), str)


def read_json(path: Path) -> dict:
    """A JSON object we wrote, or {} when it is missing, damaged or of another form (never followed through a link)."""
    if path.is_symlink():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read(path: Path) -> dict[str, dict]:
    """The entries of the form we write; anything else in the file is ignored (the files are checked again)."""
    return {k: v for k, v in read_json(path).items() if valid_entry(v)}


def write(path: Path, record: dict) -> None:
    """A JSON object (the record, a partial's hash), replaced whole so that a reader never sees half of it; a
    full disk is said plainly."""
    try:
        write_atomic(path, json.dumps(record, indent=1, sort_keys=True).encode(), mode=0o600)
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DownloadError(f"No space left in {path.parent} to write {path.name} (a few kB): "
                                "free some space and run the command again; nothing placed was removed.") from None
        raise DownloadError(f"Cannot write {path} ({error.strerror}): check the folder's permissions.") from None


def stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def unchanged(folder: Path, target: str, record: dict[str, dict]) -> bool:
    """Placed (or found) by us, checked by today's content check, and unchanged since (size and time)."""
    entry = record.get(target)
    path = folder / target
    if entry is None or entry["checked"] < CHECK_VERSION or path.is_symlink() or not path.is_file():
        return False
    return stamp(path) == {"size": entry["size"], "mtime_ns": entry["mtime_ns"]}


def entry(path: Path, etag: str | None, commit: str | None, revision: str) -> dict:
    return {"etag": etag, "commit": commit, "revision": revision, "checked": CHECK_VERSION, **stamp(path)}


def file_hash(path: Path, etag: str, on_bytes: Callable[[int], None] | None = None) -> str:
    """The file's hash in the form of the hub's ETag: sha256 for LFS files (64 hex digits), else git's blob sha1
    (40 hex digits)."""
    if len(etag) == 64:
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1()
        digest.update(f"blob {path.stat().st_size}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(8 * 2**20):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def same_as(path: Path, size: int, etag: str) -> bool:
    """Whether the file at `path` is the one of this size and hash."""
    return path.is_file() and not path.is_symlink() and path.stat().st_size == size and file_hash(path, etag) == etag

