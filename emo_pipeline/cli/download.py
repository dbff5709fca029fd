"""`download NAME ...`: a family's files from the hub into the model folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..download.catalogue import human_size
from .model_folder import default_model_folder, model_argument
from .stop import stop_requested


def download_command(args: argparse.Namespace) -> int:
    """`download NAME ...`: fetch, verify and place; then say what to run."""
    from ..download import DownloadCancelled, download
    from ..download.fetch import resolve
    from ..download.terminal import TerminalProgress

    folder = Path(args.to).expanduser().absolute() if args.to else default_model_folder()
    print(f"Model folder: {folder}{'' if args.to else ' (the default; --to for another)'}")
    try:
        result = download(args.names, folder, args.revision, convert=args.convert, force=args.force,
                          progress=TerminalProgress(), is_cancelled=stop_requested)
    except DownloadCancelled:
        raise KeyboardInterrupt() from None
    if result.placed:
        print(f"Placed {len(result.placed)} file(s) in {result.folder} ({human_size(result.fetched_bytes)} fetched).")
    if result.present:
        print(f"{len(result.present)} file(s) were there already and were not fetched again.")
    for conversion in result.conversions:
        print(conversion.said)
    families = [d.name for d in resolve(args.names) if d.model]  # result.models: one per family, in this order
    for name, model in zip(families, result.models):  # a converted network where there is one
        poses = " --poses 01" if name.startswith("echomimic-v2") else ""  # a demo sequence (see its docs page)
        print("Ready: python -m emo_pipeline generate --image portrait.png --audio speech.wav --model "
              f"{model_argument(model)}{poses}")
        if poses:
            print("  EchoMimic v2 is also driven by hand poses: copy its demo sequences (assets/halfbody_demo/pose/<name>/ "
                  "of github.com/antgroup/echomimic_v2) to echomimic_v2/poses/<name>/ here, or give --poses a driving "
                  "video (after `download dwpose`).")
    return 0
