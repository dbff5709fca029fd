"""Telling a damaged pickle from one that carries code: torch's weights_only loader refuses both with
similar words, but only a pickle that parses to its end can be carrying objects besides tensors."""

from __future__ import annotations

import pickletools
import zipfile
from pathlib import Path

LEGACY_PICKLES = 4  # torch's legacy format: magic number, protocol, system info, then the object itself


def _parses(stream) -> bool:
    try:
        for _ in pickletools.genops(stream):
            pass
        return True
    except Exception:  # noqa: BLE001  (any opcode error, cut or bad argument: not a whole pickle)
        return False


def pickle_is_whole(path: str | Path) -> bool:
    """Whether the pickle of a torch file (zip or legacy format) parses opcode by opcode to its STOP. Nothing is
    unpickled: no object is built and no code can run."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if len(names) != 1:
                    return False
                with archive.open(names[0]) as stream:
                    return _parses(stream)
        with open(path, "rb") as stream:
            for index in range(LEGACY_PICKLES):  # a plain pickle holds one; torch's legacy format four
                if index and not stream.peek(1):
                    break
                if not _parses(stream):
                    return False
            return True
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False
