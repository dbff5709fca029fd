"""Advice said where the person is. Inside ComfyUI the nodes' way comes first (an entry in a node's list, then
Run) and the command line second; elsewhere the command line alone. The ComfyUI nodes mark their runs with
`comfyui_run()` (nodes/notify.py); the engine itself never imports ComfyUI."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

_IN_COMFYUI: ContextVar[bool] = ContextVar("emo_in_comfyui", default=False)


@contextmanager
def comfyui_run() -> Iterator[None]:
    """While a ComfyUI node runs: advice names ComfyUI's way first."""
    token = _IN_COMFYUI.set(True)
    try:
        yield
    finally:
        _IN_COMFYUI.reset(token)


def in_comfyui() -> bool:
    return _IN_COMFYUI.get()


def where(comfyui: str, command_line: str, command_line_for_comfyui: str | None = None) -> str:
    """Inside ComfyUI: `comfyui`, then the command line as the other way (`command_line_for_comfyui` where the
    command line's own next step differs, e.g. --model); elsewhere: `command_line`."""
    if in_comfyui():
        return f"{comfyui}; or {command_line_for_comfyui or command_line}"
    return command_line
