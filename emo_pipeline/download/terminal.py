"""Download progress on a terminal: one bar for the whole download and one for the file in flight."""

from __future__ import annotations

import sys

from .catalogue import human_size


class TerminalProgress:
    """tqdm bars (bytes, rate, time left); on a pipe, a line per file instead."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.total = self.current = None

    def notice(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def start(self, total_bytes: int, files: int) -> None:
        from tqdm import tqdm

        print(f"Fetching {files} file(s), {human_size(total_bytes)} ...", file=self.stream, flush=True)
        if self.tty:
            self.total = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1000, desc="all files",
                              position=0, file=self.stream, dynamic_ncols=True)

    def file(self, name: str, size: int, done: int) -> None:
        from tqdm import tqdm

        if self.current is not None:
            self.current.close()
        resumed = f" (resuming at {human_size(done)})" if 0 < done < size else ""
        if self.tty:
            self.current = tqdm(total=size, initial=done, unit="B", unit_scale=True, unit_divisor=1000,
                                desc=name[-40:], position=1, leave=False, file=self.stream, dynamic_ncols=True)
            if resumed:
                self.current.write(f"{name}{resumed}", file=self.stream)
        else:
            print(f"  {name} ({human_size(size)}){resumed}", file=self.stream, flush=True)
        if self.total is not None and done:
            self.total.update(done)  # bytes already there count towards the whole

    def advance(self, n: int) -> None:
        for bar in (self.current, self.total):
            if bar is not None:
                bar.update(n)

    def finish(self) -> None:
        for bar in (self.current, self.total):
            if bar is not None:
                bar.close()
        self.current = self.total = None
