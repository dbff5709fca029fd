"""`train`, `train-demo`, `evaluate-demo` and `synthetic`: training EMO's stages and the bundled demo model."""

from __future__ import annotations

import argparse
from pathlib import Path


def train_command(args: argparse.Namespace) -> int:
    from ..training.trainer import TrainSettings, train

    settings = TrainSettings(**{k: getattr(args, k) for k in (
        "data", "out", "stage", "init", "preset", "steps", "batch_size", "lr", "seed", "vae", "wav2vec",
        "mixed_precision", "gradient_accumulation", "gradient_checkpointing", "save_every")})
    path, _ = train(settings)
    print(f"Saved {path}")
    return 0


def train_demo_command(args: argparse.Namespace) -> int:
    from ..training.demo import train_demo

    train_demo(args.out, args.minutes, args.seed, args.clips)
    return 0


def evaluate_demo_command(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from ..training.demo import HELD_OUT_CLIPS, evaluate
    from ..training.synthetic import make_dataset

    with tempfile.TemporaryDirectory() as tmp:  # train-demo's held-out clips
        clips = make_dataset(tmp, HELD_OUT_CLIPS, seed=args.seed + 1, seconds=4.0, size=64)
        print(json.dumps(evaluate(Path(args.model), clips, args.seed), indent=1))
    return 0


def synthetic_command(args: argparse.Namespace) -> int:
    from ..training.synthetic import make_dataset

    paths = make_dataset(args.folder, args.count, args.seed, seconds=args.seconds, size=args.size)
    print(f"Wrote {len(paths)} clips to {args.folder}")
    return 0
