"""Run the command line (`python tests/render_until.py STEP <emo_pipeline arguments>`) and stop dead at
progress step STEP: print "BLOCKED" and wait, so that a test can SIGKILL it at a known point of the render
(motion frames: step (k-1)·steps + 1 is the first step of clip k; context windows: one window call).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import emo_pipeline.cli.generate as cli  # noqa: E402
from emo_pipeline.cli import main as cli_main  # noqa: E402


def main() -> int:
    block_at = int(sys.argv[1])
    progress = cli._progress

    def progress_until(info) -> None:
        progress(info)
        if info.step == block_at:
            print("BLOCKED", flush=True)
            threading.Event().wait()  # until killed

    cli._progress = progress_until
    return cli_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
