"""How many CPU threads a render on the CPU uses: the cores this process may use, split among the processes that
share them, unless told. torch's own default (every core the machine has) oversubscribes the cores when several
renders run at once: two demo renders side by side on 2 cores took minutes with 2 threads each, seconds with one.

Order: `--threads N`, else EMO_THREADS=N (so renders started side by side can each be told), else the cores this
process may use (its CPU affinity, capped by a container's CPU quota) divided by the processes on this machine
sharing them (torchrun's / accelerate's LOCAL_WORLD_SIZE, MPI's local size, or what the caller says: batch's
worker processes)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_THREADS = "EMO_THREADS"
# set by torchrun (and accelerate launch, which runs it) and by MPI launchers: the processes on this machine
LOCAL_SIZE_VARIABLES = ("LOCAL_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS")
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"

_APPLIED: list["ThreadChoice"] = []  # the choice this process applied last (torch's threads are per process)


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    cores: int  # the cores this process may use
    sharing: int  # processes on this machine sharing them
    source: str  # "--threads", ENV_THREADS or "cores"

    def describe(self) -> str:
        """For the log line that names the device, e.g. "1 thread (2 cores shared by 2 processes)"."""
        count = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        if self.source != "cores":
            return f"{count} ({self.source})"
        shared = f" shared by {self.sharing} processes" if self.sharing > 1 else ""
        return f"{count} ({self.cores} core{'s' if self.cores != 1 else ''}{shared}; --threads to change)"


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on: its affinity (else the machine's count), capped by a cgroup quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 quota here
        pass
    return max(1, cores)


def local_processes(environ: Mapping[str, str]) -> int | None:
    """The processes on this machine as a launcher told them, or None."""
    for name in LOCAL_SIZE_VARIABLES:
        value = environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return None


def decide_threads(requested: int | None = None, *, cores: int | None = None, sharing: int | None = None,
                   environ: Mapping[str, str] | None = None) -> ThreadChoice:
    """The thread count for a CPU render. `requested`: --threads (None: not given). `cores`: the cores this
    process may use (None: usable_cores()). `sharing`: the processes sharing them when no launcher variable says
    (batch's processes; None: 1). Raises ValueError naming the fix for a bad --threads or EMO_THREADS."""
    environ = os.environ if environ is None else environ
    cores = usable_cores() if cores is None else cores
    local = local_processes(environ)
    sharing = max(1, local if local is not None else sharing or 1)
    source, value = "--threads", requested
    if value is None and environ.get(ENV_THREADS, "").strip():
        source, text = ENV_THREADS, environ[ENV_THREADS].strip()
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{ENV_THREADS}={text!r}: give a whole number of threads from 1 to {cores}, "
                             f"or unset it to split the {cores} cores among the processes.")
        value = int(text)
    if value is None:
        return ThreadChoice(max(1, cores // sharing), cores, sharing, "cores")
    if not 1 <= value <= cores:
        raise ValueError(f"{source} {value}: give 1 to {cores} (the cores this process may use), or leave it out "
                         f"to split them among the processes ({max(1, cores // sharing)} each now).")
    return ThreadChoice(value, cores, sharing, f"{source}={value}" if source == ENV_THREADS else source)


def set_cpu_threads(device: str, requested: int | None = None, sharing: int | None = None) -> ThreadChoice | None:
    """Decide and apply torch's intra-op threads for a render on `device`; None (nothing set) off the CPU.
    A bad --threads or EMO_THREADS raises ValueError on every device."""
    import torch

    choice = decide_threads(requested, sharing=sharing)
    if torch.device(device).type != "cpu":
        return None
    torch.set_num_threads(choice.threads)
    _APPLIED[:] = [choice]
    return choice


def threads_note(device: object) -> str:
    """", 1 thread (...)" for the log line of a render on the CPU; "" elsewhere."""
    import torch

    if torch.device(str(device)).type != "cpu":
        return ""
    if _APPLIED and _APPLIED[0].threads == torch.get_num_threads():
        return f", {_APPLIED[0].describe()}"
    threads = torch.get_num_threads()
    return f", {threads} thread{'s' if threads != 1 else ''}"
