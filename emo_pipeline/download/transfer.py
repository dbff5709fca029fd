"""One file's bytes from the network into its partial file, with a byte loop of our own on huggingface_hub's HTTP
client (its `http_get` writes, reports and can be stopped only in 10 MiB steps, and trusts the body's length).

A reader thread takes the response apart; this loop writes what it hands over, so that:
- Cancel is looked at every `poll_s` whether bytes come or not (a trickle or a stall cannot hold it up);
- progress is reported, and what arrived is flushed to the partial file, every MiB or every second;
- the body is never written past the size the hub announced, and a length that disagrees is an error;
- a stall (no byte for `stall_s`) or a trickle (under `min_rate` over `window_s`) ends in a plain error;
- a connection cut after some bytes arrived is resumed from the last byte written (a ranged request),
  and a host that answers a range with the whole file is read from the start.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Protocol

from ..io.safe_files import open_append, real_folder
from .catalogue import human_size
from .errors import DownloadCancelled, DownloadError
from .hub import Remote, explain, host_of, network_errors, session, token_headers


class Progress(Protocol):
    def notice(self, text: str) -> None: ...  # a line to say before anything is fetched (a non-commercial licence)
    def start(self, total_bytes: int, files: int) -> None: ...
    def file(self, name: str, size: int, done: int) -> None: ...  # a file begins; `done` bytes are there already
    # (they count towards the whole download; `advance` then reports the bytes that follow, negative when a
    # host answered a resume with the whole file and the bytes kept were dropped)
    def advance(self, n: int) -> None: ...
    def finish(self) -> None: ...


@dataclass(frozen=True)
class Limits:
    stall_s: float = 60.0  # no byte for this long: stalled
    window_s: float = 120.0  # a trickle is judged over this window ...
    min_rate: float = 1000.0  # ... bytes per second below which no file of ours would ever finish
    poll_s: float = 0.2  # Cancel is looked at least this often
    report_bytes: int = 2**20  # progress reported, and what arrived flushed to disk, every MiB ...
    report_s: float = 1.0  # ... or every second, whichever comes first
    resumes: int = 3  # a connection cut after some bytes is resumed this many times in one call

    @classmethod
    def from_environment(cls) -> "Limits":
        """The defaults, or EMO_DOWNLOAD_STALL_S, EMO_DOWNLOAD_MIN_RATE (bytes per second) and
        EMO_DOWNLOAD_RATE_WINDOW_S where set (for a slow link, or a test)."""
        limits = cls()
        for variable, field in (("EMO_DOWNLOAD_STALL_S", "stall_s"), ("EMO_DOWNLOAD_MIN_RATE", "min_rate"),
                                ("EMO_DOWNLOAD_RATE_WINDOW_S", "window_s")):
            value = os.environ.get(variable)
            if value:
                try:
                    number = float(value)
                except ValueError:
                    number = -1.0
                if not number >= 0:
                    raise DownloadError(f"{variable}={value!r} is not a number of at least 0: set it to one, or "
                                        "unset it for the default.")
                limits = replace(limits, **{field: number})
        return limits


CHUNK = 64 * 1024


class _Cut(Exception):
    """The body ended (or the connection broke) before the file was whole."""

    def __init__(self, received: int, error: BaseException | None, answered: bool) -> None:
        super().__init__()
        self.received, self.error, self.answered = received, error, answered


def fetch_into(remote: Remote, partial: Path, progress: Progress, is_cancelled: Callable[[], bool],
               limits: Limits) -> int:
    """Append the bytes `partial` lacks of `remote` until it holds the announced size; returns the bytes that
    arrived over the network. A partial that can never complete (the host disagrees about the size, or sends
    more) is removed; otherwise what arrived stays for the next call."""
    received, resumes = 0, 0
    while True:
        start = partial.stat().st_size if partial.is_file() else 0
        if start >= remote.size:
            return received
        try:
            return received + _attempt(remote, partial, start, progress, is_cancelled, limits)
        except _Cut as cut:
            received += cut.received
            done = partial.stat().st_size if partial.is_file() else 0
            if not cut.answered and cut.error is not None and isinstance(cut.error, network_errors()):
                raise explain(cut.error, remote.file, remote.commit, remote.url) from None
            if cut.received == 0 or resumes >= limits.resumes:
                raise DownloadError(
                    f"The connection to {host_of(remote.url)} broke off at {human_size(done)} of {remote.file.path} "
                    f"({human_size(remote.size)}). What arrived is kept: run the command again to resume.") from None
            resumes += 1


def _attempt(remote: Remote, partial: Path, start: int, progress: Progress, is_cancelled: Callable[[], bool],
             limits: Limits) -> int:
    headers = token_headers(remote.url) | {"Accept-Encoding": "identity"}  # byte ranges of the file itself
    if start:
        headers["Range"] = f"bytes={start}-"
    pipe: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()
    threading.Thread(target=_read, args=(remote.url, headers, pipe, stop, limits.stall_s + 5), daemon=True,
                     name="emo-download").start()
    name, host = remote.file.path, host_of(remote.url)
    expected, got, pending = remote.size - start, 0, 0
    began = last_byte = last_report = time.monotonic()
    samples: deque[tuple[float, int]] = deque([(began, 0)])
    answered = False  # the host sent its headers
    try:
        with _open_partial(partial) as out:
            while True:
                try:
                    kind, payload = pipe.get(timeout=limits.poll_s)
                except queue.Empty:
                    kind, payload = None, None
                if is_cancelled():
                    raise DownloadCancelled()
                now = time.monotonic()
                if kind == "head":
                    status, head = payload
                    answered = True
                    if status == 200 and start:  # the host ignored the range: the whole file comes again
                        out.flush()
                        out.truncate(0)
                        progress.advance(-start)
                        start, expected = 0, remote.size
                    elif status == 206:
                        begins = head.get("content-range", "").removeprefix("bytes ").split("-")[0]
                        if begins != str(start):
                            raise _size_error(partial, remote, f"answers a resume at byte {start} with "
                                                               f"'{head.get('content-range')}'")
                    elif status == 416:
                        raise _size_error(partial, remote, f"has no byte {start} of it")
                    elif status != 200:
                        raise DownloadError(f"{host} answered {status} for {remote.file.repo}/{name}; try again later "
                                            "(what arrived so far is kept and resumed).")
                    length = head.get("content-length")
                    if length is not None and head.get("content-encoding", "identity") == "identity" \
                            and length.isdigit() and int(length) != expected:
                        raise _size_error(partial, remote, f"sends {human_size(start + int(length))}")
                    last_byte = now
                elif kind == "data":
                    if got + len(payload) > expected:
                        raise _size_error(partial, remote, "sends more")
                    out.write(payload)
                    got, pending, last_byte = got + len(payload), pending + len(payload), now
                elif kind in ("end", "error"):
                    out.flush()
                    progress.advance(pending)
                    pending = 0
                    if kind == "end" and got == expected:
                        return got
                    raise _Cut(got, payload, answered)
                if pending and (pending >= limits.report_bytes or now - last_report >= limits.report_s):
                    out.flush()  # what arrived survives a kill: a resume continues from here
                    progress.advance(pending)
                    pending, last_report = 0, now
                if now - last_byte > limits.stall_s:
                    raise DownloadError(
                        f"{host} sent nothing for {limits.stall_s:.0f} s while sending {name} ({human_size(start + got)} "
                        f"of {human_size(remote.size)}): the transfer stalled. What arrived is kept: run the command "
                        "again to resume, or set HF_ENDPOINT to a mirror.")
                if now - samples[-1][0] >= 1.0:
                    samples.append((now, got))
                while len(samples) > 1 and samples[1][0] <= now - limits.window_s:
                    samples.popleft()
                then, got_then = samples[0]
                if now - then >= limits.window_s and got - got_then < limits.min_rate * (now - then):
                    rate = (got - got_then) / (now - then)
                    raise DownloadError(
                        f"{host} sends {name} at {human_size(rate)}/s over the last {now - then:.0f} s, far too slow "
                        f"to finish its {human_size(remote.size - start - got)} left: stopped. What arrived is kept: "
                        "run the command again later to resume, or set HF_ENDPOINT to a mirror.")
    finally:
        stop.set()  # the reader ends at its next chunk, or when its read times out


def _size_error(partial: Path, remote: Remote, what: str) -> DownloadError:
    """A host that disagrees with the size the hub announced: the partial can never complete, so it goes (with the
    note of the hash it was for)."""
    partial.unlink(missing_ok=True)
    partial.with_name(partial.name + ".json").unlink(missing_ok=True)
    return DownloadError(
        f"{host_of(remote.url)} announced {human_size(remote.size)} ({remote.size} B) for {remote.file.path} but "
        f"{what}: the file was not kept. Run the command again to fetch it afresh; if this repeats, the hub or "
        "mirror serves a damaged file (set HF_ENDPOINT to another, or report it to the repository's owners).")


def _open_partial(path: Path):
    """The partial file for appending: made by us, never through a link planted at its name."""
    return open_append(real_folder(path.parent) / path.name, 0o600)


def _read(url: str, headers: dict[str, str], pipe: queue.Queue, stop: threading.Event, timeout: float) -> None:
    """The response, handed over as ("head", (status, headers)), ("data", bytes) ..., then ("end", None) or
    ("error", exception)."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                pipe.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    try:
        client = session()
        if callable(getattr(client, "stream", None)):  # httpx: huggingface_hub 1.0 and later (requests has a flag)
            with client.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=True) as response:
                if _hand_over(response, put):
                    for chunk in response.iter_bytes():
                        if not put(("data", chunk)):
                            return
        else:  # requests: huggingface_hub 0.x (transformers 4 pins it)
            with client.get(url, headers=headers, timeout=timeout, allow_redirects=True, stream=True) as response:
                if _hand_over(response, put):
                    read = getattr(response.raw, "read1", response.raw.read)  # read1: what has arrived, at once
                    while chunk := read(CHUNK):
                        if not put(("data", chunk)):
                            return
        put(("end", None))
    except Exception as error:  # noqa: BLE001  (handed to the loop, which says it in words)
        put(("error", error))


def _hand_over(response, put: Callable[[tuple], bool]) -> bool:
    """The status and headers; whether a body follows that is the file's."""
    head = {k.lower(): v for k, v in response.headers.items()}
    return put(("head", (response.status_code, head))) and response.status_code in (200, 206)
