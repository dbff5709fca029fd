"""`download NAME ...`: a family's files from the hub into the model folder."""

from __future__ import annotations

import argparse

from ..download.catalogue import human_size
from .stop import stop_requested


def download_command(args: argparse.Namespace) -> int:
    """`download NAME ...`: fetch, verify and place; then say what to run."""
    from ..download import DownloadCancelled, download
    from ..download.terminal import TerminalProgress

    try:
        result = download(args.names, args.to, args.revision, convert=args.convert, force=args.force,
                          progress=TerminalProgress(), is_cancelled=stop_requested)
    except DownloadCancelled:
        raise KeyboardInterrupt() from None
    if result.placed:
        print(f"Placed {len(result.placed)} file(s) in {result.folder} ({human_size(result.fetched_bytes)} fetched).")
    if result.present:
        print(f"{len(result.present)} file(s) were there already and were not fetched again.")
    for path in result.converted:
        print(f"Converted: {path}")
    for model in result.converted or result.models:
        print(f"Ready: python -m emo_pipeline generate --image portrait.png --audio speech.wav --model {model}")
    return 0
