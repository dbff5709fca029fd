"""What the engine warns about reaches the person at the graph, not only the server log.

The nodes run inside `relays_warnings`: the pack's own Python warnings and the engine's log warnings
raised while a node runs are sent to ComfyUI's frontend as "emo.warning" events (web/emo_warnings.js
shows each as a toast) and still written to the log. Other libraries' warnings (deprecations and
the like) are not for the person at the graph: they are passed on as Python would show them.
"""

from __future__ import annotations

import functools
import logging
import warnings
from pathlib import Path
from typing import Callable

from .. import emo_pipeline
from ..emo_pipeline.io.advice import comfyui_run

EVENT = "emo.warning"
PACK = Path(__file__).resolve().parents[1]  # warnings raised from files under here are the pack's own
log = logging.getLogger(__name__)


def _ours(warning: warnings.WarningMessage) -> bool:
    return Path(warning.filename).resolve().is_relative_to(PACK)


def notify(message: str, node: str) -> None:
    """Send one warning to the frontend; without a running server (tests, scripts) it is only logged."""
    try:
        from server import PromptServer

        PromptServer.instance.send_sync(EVENT, {"message": message, "node": node})
    except Exception:  # no server, or one that cannot take messages now: the log line is enough
        pass


class _Relay(logging.Handler):
    def __init__(self, node: str) -> None:
        super().__init__(logging.WARNING)
        self.node = node

    def emit(self, record: logging.LogRecord) -> None:
        notify(record.getMessage(), self.node)


DISPLAY_NAMES: dict[str, str] = {}  # class name → the name the graph shows; filled by nodes/__init__.py


def display_name(cls: type) -> str:
    """The name the graph shows for a node class ("EMO ReferenceNet Encode", not EMOReferenceNetEncode)."""
    return DISPLAY_NAMES.get(cls.__name__, cls.__name__)


def relays_warnings(method: Callable) -> Callable:
    """Decorate a node's function: warnings raised while it runs go to the UI as well as the log, under the
    node's display name, and the engine's advice names ComfyUI's way first (advice.comfyui_run)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        node = display_name(type(self))
        engine_log = logging.getLogger(emo_pipeline.__name__)
        handler = _Relay(node)
        engine_log.addHandler(handler)
        try:
            with warnings.catch_warnings(record=True) as caught, comfyui_run():
                warnings.simplefilter("always")
                result = method(self, *args, **kwargs)
        finally:
            engine_log.removeHandler(handler)
        for warning in caught:
            if _ours(warning):
                log.warning("%s", warning.message)
                notify(str(warning.message), node)
            else:  # as if never caught: the usual filters decide whether and how often it shows
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return result

    return run
