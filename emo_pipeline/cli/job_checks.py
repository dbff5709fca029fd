"""Checks on a batch jobs file's lines, before anything runs: line length, option types, where outputs go."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import BinaryIO, Iterator

# A job is a short JSON object (a few hundred bytes); a longer line is a mistake or an attack, and is
# neither decoded nor echoed.
MAX_LINE_BYTES = 64 * 1024


def numbered_lines(file: BinaryIO) -> Iterator[tuple[int, str | None]]:
    """(line number, text) for each line; text is None for a line over MAX_LINE_BYTES, which is skipped
    in pieces so that it is never held whole."""
    number = 0
    while True:
        piece = file.readline(MAX_LINE_BYTES + 1)
        if not piece:
            return
        number += 1
        if len(piece) > MAX_LINE_BYTES and not piece.endswith(b"\n"):
            while piece and not piece.endswith(b"\n"):  # the rest of the overlong line
                piece = file.readline(MAX_LINE_BYTES)
            yield number, None
            continue
        yield number, piece.decode("utf-8", errors="replace")


def cut(text: str, limit: int = 60) -> str:
    """At most `limit` characters of `text`, for messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = 60) -> str:
    """A value as a message shows it: strings quoted, cut to `limit` characters."""
    return cut(f'"{value}"' if isinstance(value, str) else repr(value), limit)


def _kind(action: argparse.Action) -> tuple[type | tuple[type, ...], str]:
    if action.type is int:
        return int, "a whole number"
    if action.type is float:
        return (int, float), "a number"
    return str, "a string"


def option_problem(name: str, value: object, action: argparse.Action) -> str | None:
    """What is wrong with a job's value for one of generate's options (None: nothing). JSON null means
    the option's default."""
    if value is None:
        return None
    if action.nargs == 0:  # a flag: --paste-back, --low-vram, ...
        return None if isinstance(value, bool) else f"{name} is true or false, not {shown(value)}"
    types, wanted = _kind(action)
    if isinstance(action.nargs, int):  # --guidance-interval START END
        if not (isinstance(value, list) and len(value) == action.nargs):
            return f"{name} is a list of {action.nargs} values, e.g. [0, 0.5], not {shown(value)}"
        values = value
    else:
        values = [value]
    for item in values:
        if isinstance(item, bool) or not isinstance(item, types):
            return f"{name} must be {wanted}, not {shown(value)}"
        if action.choices is not None and item not in action.choices:
            return f"{name} is one of {', '.join(map(str, action.choices))}, not {shown(item)}"
    return None


def output_problem(out_dir: Path, name: str) -> tuple[Path, str | None]:
    """The job's video path under `out_dir`, and what is wrong with it: it must stay inside `out_dir` (no
    absolute path, no `..`, no link out of it)."""
    root = out_dir.resolve()
    out = (root / name).resolve()
    if not out.is_relative_to(root) or out == root:
        return out, (f"out {shown(name)} is outside --out-dir {out_dir}: give a name under it, "
                     f"such as {shown(Path(name).name or 'video.mp4')}")
    if out.suffix.lower() != ".mp4":
        return out, f"out {shown(out.name)}: the videos are MP4, name it {shown(out.with_suffix('.mp4').name)}"
    return out, None
