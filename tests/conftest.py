import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The README runs the suite in two pytest-xdist workers (the tests wait on subprocesses, servers and files for
# much of their time, so one process leaves a core idle): each worker takes its share of the cores, for torch
# here and, through EMO_THREADS and OMP_NUM_THREADS, for the renders and tools it starts, so that the two never
# run more threads than there are cores (oversubscribed, torch's threads spin-wait: minutes instead of seconds).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
torch.set_num_threads(THREADS)
if WORKERS > 1:
    os.environ.setdefault("EMO_THREADS", str(THREADS))
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
warnings.filterwarnings("ignore", message=".*should be kept in float32.*")


class _NoTorchTrace(logging.Filter):
    """Drops the records of torch's structured compile trace (`torch.__trace`, tlparse's input: an empty DEBUG
    record per compile event, thousands for one compiled Backbone). torch keeps that logger from propagating,
    but code that sets logging up again can turn propagation back on, and then a failing compile test's report
    is buried under them. Filtering pytest's handlers, not the logger, keeps TORCH_TRACE's files working."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("torch.__trace")


def pytest_sessionstart(session: pytest.Session) -> None:
    capture = session.config.pluginmanager.get_plugin("logging-plugin")  # None with -p no:logging
    for name in ("caplog_handler", "report_handler", "log_cli_handler", "log_file_handler"):
        handler = getattr(capture, name, None)
        if isinstance(handler, logging.Handler):
            handler.addFilter(_NoTorchTrace())


@pytest.fixture(autouse=True)
def _torch_trace_not_propagating() -> None:
    """torch's own setting for its trace logger, back for every test whatever an earlier one did to logging: with
    propagation on, the records also reach torch's stderr handler (empty "V..." lines in the captured stderr)."""
    logging.getLogger("torch.__trace").propagate = False


class DynamoRecord:
    """What torch.compile did inside `dynamo_record()`'s block."""

    def __init__(self) -> None:
        from torch._dynamo import convert_frame
        from torch._dynamo.utils import counters

        self._codes, self._seen = convert_frame.input_codes, len(convert_frame.input_codes.seen)
        self._breaks = sum(counters["graph_break"].values())
        self.graphs: list[str] = []  # one per compiled frame: a graph break or a recompile makes more than one
        self.breaks = 0
        self.guard_failures: dict = {}
        self.frames: list[str] = []  # every frame dynamo was handed, also those it left to Python

    def finish(self) -> None:
        from torch._dynamo.utils import counters, get_compilation_metrics, guard_failures

        self.graphs = [f"{m.co_name} ({m.co_filename}:{m.co_firstlineno})" for m in get_compilation_metrics()]
        self.breaks = sum(counters["graph_break"].values()) - self._breaks
        self.guard_failures = {str(k): v for k, v in guard_failures.items()}
        codes = [ref() for ref in self._codes.seen[self._seen:]]
        self.frames = [f"{c.co_name} ({c.co_filename}:{c.co_firstlineno})" for c in codes if c is not None]

    def compiled_once(self) -> bool:
        return len(self.graphs) == 1 and self.breaks == 0 and not self.guard_failures


@contextmanager
def dynamo_record():
    """torch.compile's work inside the block, from dynamo's fresh-process state (what earlier tests left in its
    caches does not count): the graphs compiled, graph breaks, failed guards and the frames it was handed. Graphs
    are counted from dynamo's compilation metrics, not from its "frames ok" counter, which also counts frames it
    was handed and left to Python without compiling anything."""
    torch._dynamo.reset()
    torch._dynamo.utils.clear_compilation_metrics()
    record = DynamoRecord()
    try:
        yield record
    finally:
        record.finish()


@pytest.fixture(scope="session")
def tiny_pipeline():
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.tiny import tiny_components

    return EMOPipeline(*tiny_components())


@pytest.fixture(scope="session")
def tiny_portrait(tiny_pipeline):
    gen = torch.Generator().manual_seed(0)
    return tiny_pipeline.prepare_portrait(torch.rand(96, 96, 3, generator=gen), face_box=(0.25, 0.2, 0.75, 0.8))


def speech_like(seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """A voiced, syllable-modulated waveform [channels, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(round(seconds * sample_rate))) / sample_rate
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t)
    voice = torch.sin(2 * torch.pi * 140 * t) + 0.3 * torch.sin(2 * torch.pi * 280 * t)
    wave = 0.3 * envelope * voice + 0.01 * torch.randn(t.shape, generator=gen)
    return wave.expand(channels, -1).clone()


def decoded_frames(path) -> torch.Tensor:
    """Every frame of a video file as uint8 [F, H, W, 3], decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])


# What _workload takes on an idle 2-core machine: it measured 0.17-0.23 s on this project's 2-core machine
# under a load average of about 4, so about half that when idle.
REFERENCE_SECONDS = 0.09


def _workload() -> float:
    import time

    a = torch.rand(192, 192, generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    for _ in range(40):
        a = torch.tanh(a @ a) + sum(i * 1e-9 for i in range(2000))
    return time.perf_counter() - started


_SLOWNESS: list[float] = []


def machine_slowness() -> float:
    """How many times slower than the reference this machine runs now (at least 1; load from other
    processes counts), measured once per session: the factor for the tests' generous upper bounds."""
    if not _SLOWNESS:
        _SLOWNESS.append(max(1.0, min(_workload() for _ in range(3)) / REFERENCE_SECONDS))
    return _SLOWNESS[0]


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds spent so far by a process and all its descendants; None once it is gone."""
    import psutil

    try:
        family = [psutil.Process(pid)]
        family += family[0].children(recursive=True)
    except psutil.Error:
        return None
    total = 0.0
    for proc in family:
        try:
            times = proc.cpu_times()
        except psutil.Error:  # ended between the listing and the reading
            continue
        total += times.user + times.system
    return total


class WatchedProcess:
    """A child whose output lines are read as they come, so a test waits on the line it needs, not on the
    clock. A hung child is told from a slow one by what it does: within every `stall` seconds (scaled by
    machine_slowness) a working child prints a line or spends CPU time (itself or its children); one that
    does neither has hung. On a loaded machine a child can be silent for many minutes while it works (its
    threads wait for a core), so silence alone proves nothing. `limit` stall intervals in all is the
    generous outer bound for a child that spins without end. Used as a context manager: a child still
    running when the test ends (it failed) is killed, not left behind."""

    def __init__(self, args: list[str], stall: float = 300.0, limit: int = 12, merge_stderr: bool = False,
                 **kwargs) -> None:
        import queue
        import subprocess
        import threading
        import time

        self.stall = stall * machine_slowness()
        self.deadline = time.monotonic() + limit * self.stall
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
                                     **kwargs)
        self.lines: list[str] = []
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self._err_reader = None
        if not merge_stderr:
            self._err_reader = threading.Thread(target=lambda: self._err.append(self.proc.stderr.read()),
                                                daemon=True)
            self._err_reader.start()

    def __enter__(self) -> "WatchedProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def _working(self, spent: float | None) -> bool:
        """Whether the child spent CPU time since `spent` was read, within the outer bound."""
        import time

        now = cpu_seconds(self.proc.pid)
        return spent is not None and now is not None and now > spent + 0.05 and time.monotonic() < self.deadline

    def wait_for(self, predicate) -> str | None:
        """The first new line for which predicate(line) holds; None when the output ended first."""
        import queue

        while True:
            spent = cpu_seconds(self.proc.pid)
            try:
                line = self._queue.get(timeout=self.stall)
            except queue.Empty:
                if self._working(spent):
                    continue  # silent but working: a busy machine, not a hang
                self.proc.kill()
                raise AssertionError(f"no output and no CPU time spent for {self.stall:.0f} s (hung?), or past the "
                                     f"outer bound; last lines: {self.lines[-5:]}")
            if line is None:
                return None
            self.lines.append(line)
            if predicate(line):
                return line

    def finish(self) -> tuple[int, str, str]:
        """Exit code, all stdout and stderr, once the child ends (the same bounds as wait_for)."""
        self.wait_for(lambda line: False)
        code = self.proc.wait(timeout=self.stall)  # its output has ended: it is exiting
        if self._err_reader is not None:
            self._err_reader.join(timeout=self.stall)  # its last read ends with the child
        return code, "".join(self.lines), self._err[0] if self._err else ""


def run_child(args: list[str], stall: float = 300.0, merge_stderr: bool = False, **kwargs):
    """subprocess.run for the tests: the child's output captured as text, and WatchedProcess's bounds (a
    child that stops working fails the test; a slow one is waited for) instead of a wall-clock timeout."""
    import subprocess

    with WatchedProcess(args, stall=stall, merge_stderr=merge_stderr, **kwargs) as child:
        code, out, err = child.finish()
    return subprocess.CompletedProcess(args, code, out, None if merge_stderr else err)
