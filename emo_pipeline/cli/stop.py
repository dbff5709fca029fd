"""Stopping a command: SIGINT and SIGTERM are recorded and raised as KeyboardInterrupt, and long loops poll
`stop_requested` between steps."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that it unwinds (and cleans up) as Ctrl-C does."""


# The signal that asked to stop. The exception a handler raises is lost when it lands in a __del__ or a
# weakref callback (Python only prints it), so sampling also polls this between steps.
STOP: dict[str, int | None] = {"signal": None}


def on_signal(signum, frame) -> None:
    STOP["signal"] = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_requested() -> bool:
    return STOP["signal"] is not None
