"""Resident memory of this process as Linux's /proc reports it, for the render scripts that measure it."""

from pathlib import Path


def status_kib(field: str) -> int:
    """A /proc/self/status field in KiB: VmRSS (resident now), VmHWM (the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)
