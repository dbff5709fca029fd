import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*should be kept in float32.*")


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


class WatchedProcess:
    """A child whose output lines are read as they come, so a test waits on the line it needs, not on the
    clock; `stall` seconds (scaled by machine_slowness) without a line means it hung. Used as a context
    manager: a child still running when the test ends (it failed) is killed, not left behind."""

    def __init__(self, args: list[str], stall: float = 300.0, **kwargs) -> None:
        import queue
        import subprocess
        import threading

        self.stall = stall * machine_slowness()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        self.lines: list[str] = []
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._err: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self._err_reader = threading.Thread(target=lambda: self._err.append(self.proc.stderr.read()), daemon=True)
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

    def wait_for(self, predicate) -> str | None:
        """The first new line for which predicate(line) holds; None when the output ended first."""
        import queue

        while True:
            try:
                line = self._queue.get(timeout=self.stall)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no output for {self.stall:.0f} s (hung?); last lines: {self.lines[-5:]}")
            if line is None:
                return None
            self.lines.append(line)
            if predicate(line):
                return line

    def finish(self) -> tuple[int, str, str]:
        """Exit code, all stdout and stderr, once the child ends (a stall bound between its lines)."""
        self.wait_for(lambda line: False)
        code = self.proc.wait(timeout=self.stall)
        self._err_reader.join(timeout=self.stall)  # its last read ends with the child
        return code, "".join(self.lines), self._err[0] if self._err else ""
