"""Writes tests/data/tiny_syncnet.safetensors (and tests/data/tiny_syncnet.json, one line of metadata): a tiny
SyncNet (emo_pipeline.metrics.syncnet at width 1/16, 64-d embeddings) trained by emo_pipeline.training.syncnet on
synthetic drawn-face clips (training/synthetic.py's make_clip, seeds TRAIN_SEED .. TRAIN_SEED + clips - 1, 4 s
each), for tests/test_sync_behaviour.py. Crops: each clip's whole 64² frame resized to 224². A fixed number of
steps, seeded, on 2 CPU threads; the time it took is recorded, not used.

    python tests/make_tiny_syncnet.py [--clips 24] [--steps 400] [--seed 0]

At the end it scores two held-out clips (seeds HELD_OUT_SEED..) with their sound shifted by -6..6 frames and
prints the offsets found, as the test does. The weights mean nothing for real videos: the net has only seen
drawn faces whose mouths open with the sound's loudness.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emo_pipeline.metrics.sync_score import score  # noqa: E402
from emo_pipeline.training.synthetic import make_clip  # noqa: E402
from emo_pipeline.training.syncnet import (load_sync_clip, mfcc_of, save_syncnet, shift_samples,  # noqa: E402
                                           train_syncnet)

OUT = ROOT / "tests" / "data" / "tiny_syncnet.safetensors"
TRAIN_SEED = 1000  # clip seeds 1000.. for training; the test's held-out clips use 9000..
HELD_OUT_SEED = 9000
SECONDS = 4.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=float, default=0.0625)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        seeds = list(range(TRAIN_SEED, TRAIN_SEED + args.clips))
        paths = [Path(tmp) / f"train_{s}.mp4" for s in seeds]
        for path, s in zip(paths, seeds):
            make_clip(path, s, seconds=SECONDS)
        made = time.perf_counter() - start
        start = time.perf_counter()
        result = train_syncnet(paths, args.steps, width=args.width, embedding=args.embedding, seed=args.seed,
                               lr=args.lr, log=print)
        trained = time.perf_counter() - start

        held_out = {}
        for s in (HELD_OUT_SEED, HELD_OUT_SEED + 1):
            path = Path(tmp) / f"held_out_{s}.mp4"
            make_clip(path, s, seconds=SECONDS)
            clip = load_sync_clip(path)
            found = {}
            for k in (-6, -3, 0, 3, 6):
                shifted = shift_samples(clip.samples, k)
                scores = score(result.network, clip.crops, mfcc_of(shifted), len(shifted), batch_size=100)
                found[k] = [scores.offset, round(scores.sync_c, 3)]
            held_out[s] = found
            print(f"held-out clip {s}: shift -> [offset found, Sync-C] {found}")

    last = result.losses[-50:]
    meta = {"seed": args.seed, "clips": args.clips, "clip_seeds": f"{seeds[0]}..{seeds[-1]}", "seconds": SECONDS,
            "crop": "whole frame 64² → 224²", "steps": args.steps, "width": args.width,
            "embedding": args.embedding, "lr": args.lr, "clips_per_step": 4, "windows_per_clip": 4,
            "max_shift": 15, "threads": args.threads, "train_seconds": round(trained, 1),
            "clip_seconds": round(made, 1), "final_loss": round(sum(last) / len(last), 4),
            "torch": torch.__version__, "held_out_offsets": held_out}
    save_syncnet(result.network, args.out, {"training": meta})
    args.out.with_suffix(".json").write_text(json.dumps(meta) + "\n")
    print(json.dumps(meta))
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return meta


if __name__ == "__main__":
    main()
