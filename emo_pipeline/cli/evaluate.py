"""`evaluate VIDEO [VIDEO ...]`: lip sync (SyncNet's Sync-C, Sync-D and audio-video offset) and, with --reference,
identity (CSIM) of each video, as a table or as JSON (emo_pipeline/metrics/evaluate.py says how they are made)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .model_folder import default_model_folder

COLUMNS = ("video", "Sync-C", "Sync-D", "offset", "CSIM", "frames scored", "faces lost")


def _number(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def table(rows: list[dict]) -> str:
    """One line per video: the scores, or the reason it has none."""
    cells = [list(COLUMNS)]
    for row in rows:
        if "error" in row:
            cells.append([row["video"], "error: " + row["error"]])
            continue
        cells.append([row["video"], _number(row["sync_c"]), _number(row["sync_d"]), f"{row['offset']:+d}",
                      _number(row.get("csim")), str(row["frames_scored"]), str(row["faces_lost"])])
    widths = [max(len(r[i]) for r in cells if i < len(r) and len(r) == len(COLUMNS)) for i in range(len(COLUMNS))]
    lines = []
    for r in cells:
        if len(r) != len(COLUMNS):
            lines.append(f"{r[0]:<{widths[0]}}  {r[1]}")
        else:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)


FOOTNOTE = ("Sync-C: SyncNet's confidence (higher is better); Sync-D: its smallest mean distance (lower is better); "
            "offset: audio-video lag in 25-fps frames (−k: the sound comes k frames late); CSIM: ArcFace cosine "
            "to --reference; faces lost: frames without a tracked face.")


def load_metric_models(folders: list[Path], device: str, identity: bool):
    """SyncNet and S3FD (and the face analyzer for CSIM) from the model folder; looked up here so a test can stand
    in for them."""
    from ..metrics.evaluate import MetricModels

    return MetricModels.load(folders, device, identity=identity)


def evaluate_command(args: argparse.Namespace) -> int:
    """Scores each video; 0 when all were scored, 2 when any could not be (each said on stderr)."""
    videos = [Path(v) for v in args.videos]
    for path, what in [(v, "video") for v in videos] + [(Path(p), kind) for p, kind in
                                                        ((args.audio, "audio"), (args.reference, "image")) if p]:
        if path.is_dir():
            raise ValueError(f"{path} is a folder: give a{'n' if what[0] in 'ai' else ''} {what} file.")
        if not path.is_file():
            raise FileNotFoundError(f"No such {what} file: {path}")
    folders = [Path(args.models).expanduser()] if args.models else [default_model_folder()]
    device = args.device if args.device != "auto" else "cpu"
    models = load_metric_models(folders, device, identity=bool(args.reference))
    from ..metrics.evaluate import evaluate_video

    rows, failed = [], 0
    for video in videos:
        said = set()

        def progress(stage: str, done: int, total: int | None, video: Path = video) -> None:
            if stage not in said and not args.json:
                said.add(stage)
                print(f"{video.name}: {stage} ...", file=sys.stderr, flush=True)

        try:
            scores = evaluate_video(video, models, audio=args.audio, reference=args.reference, on_progress=progress)
        except ValueError as err:  # no face track, no sound, too short: said, and the other videos go on
            if len(videos) == 1:
                raise
            failed += 1
            print(f"error: {err}", file=sys.stderr)
            rows.append({"video": str(video), "error": str(err)})
            continue
        row = scores.as_dict()
        row["video"] = str(video)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(rows))
        print(FOOTNOTE)
    return 2 if failed else 0
