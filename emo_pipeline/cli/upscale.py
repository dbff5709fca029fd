"""`upscale VIDEO --out OUT`: an existing video through Hallo2's high-resolution stage; also the upscaler
that `generate --upscale` runs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from .model_folder import default_model_folder
from .output_checks import check_output
from .stop import stop_requested


def load_upscaler(folders: list[Path], random: bool, device: str, dtype: torch.dtype, need_background: bool):
    """Hallo2's high-resolution networks from the first of `folders` holding them (or tiny random ones),
    with our face detector from the same folders."""
    from ..face import FaceAnalyzer
    from ..upscale.video import FaceUpscaler, detector_landmarks, tiny_random_upscaler

    landmarks = detector_landmarks(FaceAnalyzer(folders))
    if random:
        print("Upscaler: tiny RANDOM-WEIGHT networks (a pipeline check; the faces will be noise).")
        return tiny_random_upscaler(landmarks, device)
    upscaler = FaceUpscaler.from_folders(folders, landmarks, device, dtype, need_background=need_background)
    print(f"Upscaler: Hallo2's temporal CodeFormer{' and RealESRGAN x2' if upscaler.background else ''} "
          "(S-Lab License 1.0: non-commercial use only).")
    return upscaler


def upscale_settings(scale: int, fidelity: float, background: str, blend: str):
    from ..upscale.video import UpscaleSettings

    settings = UpscaleSettings(scale=scale, fidelity=fidelity, background=background, blend=blend)
    settings.check()
    return settings


def upscale_command(args: argparse.Namespace) -> int:
    """`upscale VIDEO --out OUT`: frames decoded, upscaled and written as they go (memory flat in length)."""
    from ..cpu_threads import set_cpu_threads
    from ..io.loading import PRECISIONS
    from ..io.media import VideoWriter, iter_video_frames, load_audio, probe_video
    from ..upscale.video import batched

    source, out = Path(args.video), Path(args.out)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such video file.")
    if out.suffix.lower() != ".mp4" or out.is_dir():
        raise ValueError(f"--out {out}: give an .mp4 file name, e.g. {source.stem}_x{args.scale}.mp4.")
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf {args.crf}: H.264's quality runs from 0 (lossless) to 51 (worst); 17-23 look good.")
    check_output(out, "--out")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the input video: choose another file name.")
    settings = upscale_settings(args.scale, args.fidelity, args.background, args.blend)
    threads = set_cpu_threads(args.device, args.threads)
    info = probe_video(source)
    folders = [Path(f) for f in args.models] if args.models else [default_model_folder()]
    upscaler = load_upscaler(folders, args.random, args.device, PRECISIONS[args.dtype],
                             args.background == "realesrgan" and args.scale > 1)
    sound = load_audio(source) if info["has_audio"] else None
    total = info["frames"]

    def progress(done: int) -> None:
        if stop_requested():
            raise KeyboardInterrupt()
        if sys.stdout.isatty():
            print(f"\r  frame {done}/{total or '?'}", end="\n" if done == total else "", flush=True)
        elif done % 16 == 0 or done == total:
            print(f"  frame {done}/{total or '?'}", flush=True)

    started = time.perf_counter()
    print(f"Upscaling {source.name} ({info['width']}x{info['height']}, {info['fps']:g} fps) x{args.scale} "
          f"on {args.device}{f', {threads.describe()}' if threads else ''} ...")
    out.parent.mkdir(parents=True, exist_ok=True)
    width, height = info["width"] * args.scale, info["height"] * args.scale
    with VideoWriter(out, info["fps"], width, height, audio=sound, crf=args.crf,
                     metadata={"comment": "upscaled with emo_pipeline (Hallo2's high-resolution stage)"}) as writer:
        for frames in batched(upscaler.stream(iter_video_frames(source), settings, on_frame=progress)):
            writer.write(frames)
    print(f"Wrote {out} ({writer.frames} frames, {width}x{height}) in {time.perf_counter() - started:.1f} s")
    return 0
