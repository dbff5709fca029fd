"""How much RAM rendering grows with the length of the audio, through the nodes: EMO Sample To Video
(streamed into the MP4) against EMO Sampler → EMO Video Combine (an IMAGE batch), tiny network, 1 step.

    python benchmarks/long_audio_memory.py --seconds 20 120 600 --modes stream image [--size 64]

Each render runs in a process of its own (tests/render_long_audio.py); growth is the peak resident size
during the render minus the resident size just before it (Linux /proc).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[20, 120, 600])
    parser.add_argument("--modes", nargs="+", default=["stream", "image"], choices=["stream", "image"])
    parser.add_argument("--size", type=int, default=64, help="frame side (the tiny network at this size)")
    parser.add_argument("--frames-per-clip", type=int, default=16)
    args = parser.parse_args()
    print("| mode | audio | frames | IMAGE batch (MiB) | RSS growth while rendering (MiB) | render (s) |")
    print("|---|---|---|---|---|---|")
    for mode in args.modes:
        for seconds in args.seconds:
            with tempfile.TemporaryDirectory() as work:
                result = subprocess.run([sys.executable, str(ROOT / "tests" / "render_long_audio.py"), str(seconds),
                                         mode, work, str(args.frames_per_clip), str(args.size)],
                                        capture_output=True, text=True)
            if result.returncode:
                sys.exit(result.stderr[-3000:])
            run = json.loads(result.stdout.strip().splitlines()[-1])
            batch = run["frames"] * args.size**2 * 3 * 4 / 2**20
            print(f"| {mode} | {seconds:g} s | {run['frames']} | {batch:.0f} | {run['growth_mib']:.0f} | "
                  f"{run['render_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
