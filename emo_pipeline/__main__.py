"""Command line: download, generate, upscale, batch, inspect, convert, train, train-demo, evaluate-demo, synthetic (see --help)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from .download.catalogue import DOWNLOADS, human_size
from .disk import DiskFullError
from .presets import PRESETS
from .families import EMOTIONS
from .schedulers import SCHEDULERS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Trained by `python -m emo_pipeline train-demo` on the synthetic drawn-face set; ships with the pack.
DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "demo" / "net.safetensors"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emo_pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a family's files from the hub into the model folder "
                                         "(resumable, verified, only what the loaders read)")
    dl.add_argument("names", nargs="+", metavar="NAME",
                    help="what to fetch: " + ", ".join(f"{d.name} (~{human_size(d.approx_bytes)})" for d in DOWNLOADS.values()))
    dl.add_argument("--to", default="models/emo",
                    help="the model folder (default: %(default)s; in ComfyUI, ComfyUI/models/emo)")
    dl.add_argument("--revision", default="main", help="branch, tag or commit of the hub repositories (default: %(default)s)")
    dl.add_argument("--convert", action="store_true",
                    help="also write each family's network as our single safetensors file (<to>/<name>.safetensors)")
    dl.add_argument("--force", action="store_true", help="replace files in the way that differ from the hub's")
    bench = sub.add_parser("benchmark", help="time each preset and memory mode on this machine (random weights, "
                                             "nothing to download) and compare the measured peak with the counted one")
    bench.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                       help="cuda (full size, 512²) or cpu (the tiny size); default: %(default)s")
    bench.add_argument("--family", default="hallo", choices=["hallo", "hallo2", "emo", "echomimic", "echomimic-acc", "memo"],
                       help="which family's network (default: %(default)s)")
    bench.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: %(default)s)")
    bench.add_argument("--modes", default="normal,low_vram,low_vram_fp8", help="comma-separated (default: %(default)s)")
    bench.add_argument("--model", help="real weights instead of random ones (a model folder or network file)")
    bench.add_argument("--budget-s", type=float, default=600.0,
                       help="the whole run's time; fewer steps are run and scaled when needed (default: %(default)s)")
    bench.add_argument("--out", default="benchmark-results", help="folder for benchmark.md and benchmark.json "
                                                                  "(default: %(default)s)")
    gen = sub.add_parser("generate", help="portrait + audio → talking-head MP4")
    gen.add_argument("--image", help="portrait (square, face-centred works best); default: a drawn face")
    gen.add_argument("--audio", help="speech or song (any format PyAV reads); default: 4 s of built-in synthetic voice")
    gen.add_argument("--out", default="outputs/emo.mp4", help="output MP4 (default: %(default)s)")
    gen.add_argument("--model", help="model folder or network file; default: the bundled demo model")
    gen.add_argument("--random", action="store_true", help="use a tiny random-weight model (pipeline check)")
    gen.add_argument("--separate-vocals", nargs="?", const="auto", metavar="ONNX",
                     help="drive the face with the voice alone, separated from the music by Kim_Vocal_2.onnx "
                          "(as Hallo does; the video keeps the full sound). Without a path: "
                          "audio_separator/Kim_Vocal_2.onnx beside --model or one folder up")
    gen.add_argument("--wav2vec", help="audio encoder file or folder to use instead of the one beside the model "
                                       "(e.g. ComfyUI's models/audio_encoders/wav2vec2-base-960h.safetensors)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--preset", choices=list(PRESETS),
                     help="sampling preset: " + "; ".join(f"{k}: {v.summary}" for k, v in PRESETS.items())
                     + " (default: the model's own sampling, which for Hallo is quality)")
    gen.add_argument("--steps", type=int, help="denoising steps (default: the preset's, else the model's: 40 for Hallo)")
    gen.add_argument("--cfg", type=float, help="guidance scale (default: the model's, 3.5 for Hallo)")
    gen.add_argument("--frames-per-clip", type=int, help="clip length; for EchoMimic the context window (12)")
    gen.add_argument("--motion-frames", type=int)
    gen.add_argument("--context-overlap", type=int,
                     help="EchoMimic: frames shared by neighbouring context windows (default: its own, 3)")
    gen.add_argument("--scheduler", choices=list(SCHEDULERS),
                     help="default: the preset's, else the model's own (ddim; flow_euler for MEMO)")
    gen.add_argument("--emotion", choices=list(EMOTIONS),
                     help="MEMO models: the emotion to express (default: neutral); other models ignore it")
    gen.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "END"),
                     help="share of the steps that use guidance, e.g. 0 0.5 for the first half (default: 0 1)")
    gen.add_argument("--cache-interval", type=int,
                     help="DeepCache: a full pass every N steps, the ones between reuse its deep features (1: off)")
    gen.add_argument("--memory-mode", choices=["auto", "normal", "low_vram", "low_vram_fp8"], default="auto",
                     help="auto (default): the fastest mode whose counted peak fits the free device memory, said in "
                          "one line; normal; low_vram; low_vram_fp8 (low-VRAM with fp8 weights)")
    gen.add_argument("--low-vram", action="store_true",
                     help="for 8 GB cards: guided rows one after the other, VAE decodes frame by frame, chunked attention")
    gen.add_argument("--fp8-weights", action="store_true",
                     help="store the network's weights in fp8 (half the memory; small quality loss)")
    gen.add_argument("--compile", action="store_true", help="torch.compile the denoiser (minutes to compile once)")
    gen.add_argument("--fps", type=float, help="video frame rate (default: the model's, 25)")
    gen.add_argument("--head-speed", type=float, help="head rotation speed (EMO speed layers only)")
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen.add_argument("--dtype", choices=list(DTYPES),
                     help="default: the model's own on CUDA (fp16; bf16 for MEMO), fp32 on CPU")
    gen.add_argument("--decode-chunk", type=int, default=8, help="frames the VAE decodes at once")
    gen.add_argument("--no-face-crop", action="store_true",
                     help="use the image as it is (it should be square and face-centred)")
    gen.add_argument("--face-index", type=int, default=0, help="which face, 0 = the largest")
    gen.add_argument("--face-fraction", type=float,
                     help="share of the crop the face takes (default: the model family's, 0.6 Hallo, 0.5 EchoMimic)")
    gen.add_argument("--paste-back", action="store_true", help="put the animated crop back into the whole photo")
    gen.add_argument("--feather", type=int,
                     help="with --paste-back: pixels over which the crop blends into the photo (default 1/16 of its side, 0: hard edge)")
    gen.add_argument("--colour-match", action="store_true", help="with --paste-back: match the crop's colours to the photo's")
    gen.add_argument("--upscale", type=int, default=1, choices=(1, 2, 3, 4),
                     help="Hallo2's high-resolution stage before any paste-back: the face restored by its temporal "
                          "CodeFormer and the video upscaled xN (2: 512² to 1024²); needs hallo2/net_g.pth "
                          "(download hallo2-upscaler; S-Lab licence, non-commercial). Default 1: off")
    _upscale_options(gen, "--upscale-")
    up = sub.add_parser("upscale", help="an existing MP4 through Hallo2's high-resolution stage (face restored by "
                                        "its temporal CodeFormer, video upscaled xN); S-Lab licence, non-commercial")
    up.add_argument("video", help="the MP4 (or any video PyAV reads), e.g. a generated face video")
    up.add_argument("--out", required=True, help="output MP4")
    up.add_argument("--scale", type=int, default=2, choices=(1, 2, 3, 4), help="upscale factor (default: %(default)s)")
    _upscale_options(up, "--")
    up.add_argument("--models", action="append",
                    help="folder holding hallo2/net_g.pth and realesrgan/RealESRGAN_x2plus.pth (and the face "
                         "detector); repeatable (default: models/emo)")
    up.add_argument("--random", action="store_true", help="tiny random-weight networks (a pipeline check)")
    up.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    up.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="default: %(default)s")
    up.add_argument("--crf", type=int, default=19, help="H.264 quality (default: %(default)s)")
    gen.add_argument("--no-resume", action="store_true",
                     help="keep no progress: by default each finished clip is kept beside --out (in .<name>.emo-resume/) "
                          "so that a stopped render continues where it was; removed once the MP4 is complete")
    gen.add_argument("--resume-cap", type=float, default=20.0, metavar="GIB",
                     help="the most disk the kept progress may take, in GiB (default: %(default)s); past it, or "
                          "when the disk is short, the render goes on without keeping progress")
    gen.add_argument("--resume-every", type=int, default=1, metavar="N",
                     help="EchoMimic: keep the whole video's latents every N denoising steps (default: %(default)s)")
    ins = sub.add_parser("inspect", help="say what a checkpoint file (or model folder) is and what it lacks")
    ins.add_argument("checkpoint")
    conv = sub.add_parser("convert", help="net.pth (or EchoMimic's folder) → one .safetensors file with its config inside")
    conv.add_argument("source")
    conv.add_argument("target")
    conv.add_argument("--dtype", choices=list(DTYPES), help="store in this precision (default: as the source)")
    conv.add_argument("--preset", help="config preset when the source carries none and is not Hallo's")
    tr = sub.add_parser("train", help="train one of EMO's three stages on a folder of videos")
    tr.add_argument("--data", required=True, help="folder of video files with sound")
    tr.add_argument("--out", required=True, help="folder for network.safetensors and the resume state")
    tr.add_argument("--stage", type=int, required=True, choices=[1, 2, 3])
    tr.add_argument("--init", help="network to start from (ours, or Hallo's net.pth to fine-tune)")
    tr.add_argument("--preset", default="tiny", help="config of a network built from scratch")
    tr.add_argument("--steps", type=int, default=1000)
    tr.add_argument("--batch-size", type=int, default=2)
    tr.add_argument("--lr", type=float, default=1e-5)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--vae")
    tr.add_argument("--wav2vec")
    tr.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    tr.add_argument("--gradient-accumulation", type=int, default=1)
    tr.add_argument("--gradient-checkpointing", action="store_true")
    tr.add_argument("--save-every", type=int, default=500)
    demo = sub.add_parser("train-demo", help="train the bundled demo model on the synthetic set (CPU)")
    demo.add_argument("--out", default="models/demo")
    demo.add_argument("--minutes", type=float, default=55.0)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--clips", type=int, default=48)
    batch = sub.add_parser("batch", help="many videos from a jobs file (JSON lines), resumable; on several "
                                          "GPUs under `accelerate launch`")
    batch.add_argument("jobs", help="JSON lines: {\"image\": ..., \"audio\": ..., \"out\": ..., any generate option}")
    batch.add_argument("--out-dir", default="renders", help="where the videos and results.jsonl go (default: %(default)s)")
    ev = sub.add_parser("evaluate-demo", help="lip sync, colour drift and head motion of a model on held-out drawn faces")
    ev.add_argument("--model", default=str(DEMO_MODEL.parent))
    ev.add_argument("--seed", type=int, default=0)
    syn = sub.add_parser("synthetic", help="write the synthetic talking-face set")
    syn.add_argument("folder")
    syn.add_argument("--count", type=int, default=32)
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--seconds", type=float, default=4.0)
    syn.add_argument("--size", type=int, default=64)
    return parser


def _upscale_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument(prefix + "fidelity", type=float, default=0.5,
                        help="CodeFormer's w: 0 trusts its codebook (more detail), 1 the input (closer to it); "
                             "default %(default)s, Hallo2's")
    parser.add_argument(prefix + "background", choices=("auto", "realesrgan", "bicubic"), default="auto",
                        help="how the rest of the frame is upscaled: RealESRGAN x2 (Hallo2's), bicubic, or auto: "
                             "RealESRGAN when realesrgan/RealESRGAN_x2plus.pth is there")
    parser.add_argument(prefix + "blend", choices=("linear", "hallo2"), default="linear",
                        help="the 4 frames shared by neighbouring 16-frame chunks: cross-faded, or as Hallo2 "
                             "(the earlier chunk's kept)")


def load_upscaler(folders: list[Path], random: bool, device: str, dtype: torch.dtype, need_background: bool):
    """Hallo2's high-resolution networks from the first of `folders` holding them (or tiny random ones),
    with our face detector from the same folders."""
    from .face import FaceAnalyzer
    from .upscale.video import FaceUpscaler, detector_landmarks, tiny_random_upscaler

    landmarks = detector_landmarks(FaceAnalyzer(folders))
    if random:
        print("Upscaler: tiny RANDOM-WEIGHT networks (a pipeline check; the faces will be noise).")
        return tiny_random_upscaler(landmarks, device)
    upscaler = FaceUpscaler.from_folders(folders, landmarks, device, dtype, need_background=need_background)
    print(f"Upscaler: Hallo2's temporal CodeFormer{' and RealESRGAN x2' if upscaler.background else ''} "
          "(S-Lab License 1.0: non-commercial use only).")
    return upscaler


def upscale_settings(scale: int, fidelity: float, background: str, blend: str):
    from .upscale.video import UpscaleSettings

    settings = UpscaleSettings(scale=scale, fidelity=fidelity, background=background, blend=blend)
    settings.check()
    return settings


def upscale_command(args: argparse.Namespace) -> int:
    """`upscale VIDEO --out OUT`: frames decoded, upscaled and written as they go (memory flat in length)."""
    from .media import VideoWriter, iter_video_frames, load_audio, probe_video
    from .upscale.video import batched

    source, out = Path(args.video), Path(args.out)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such video file.")
    if out.suffix.lower() != ".mp4" or out.is_dir():
        raise ValueError(f"--out {out}: give an .mp4 file name, e.g. {source.stem}_x{args.scale}.mp4.")
    if out.resolve() == source.resolve():
        raise ValueError(f"--out {out} is the input video: choose another file name.")
    settings = upscale_settings(args.scale, args.fidelity, args.background, args.blend)
    info = probe_video(source)
    folders = [Path(f) for f in (args.models or ["models/emo"])]
    upscaler = load_upscaler(folders, args.random, args.device, DTYPES[args.dtype],
                             args.background == "realesrgan" and args.scale > 1)
    sound = load_audio(source) if info["has_audio"] else None
    total = info["frames"]

    def progress(done: int) -> None:
        if _stop_requested():
            raise KeyboardInterrupt()
        if sys.stdout.isatty():
            print(f"\r  frame {done}/{total or '?'}", end="\n" if done == total else "", flush=True)
        elif done % 16 == 0 or done == total:
            print(f"  frame {done}/{total or '?'}", flush=True)

    started = time.perf_counter()
    print(f"Upscaling {source.name} ({info['width']}x{info['height']}, {info['fps']:g} fps) x{args.scale} "
          f"on {args.device} ...")
    out.parent.mkdir(parents=True, exist_ok=True)
    width, height = info["width"] * args.scale, info["height"] * args.scale
    with VideoWriter(out, info["fps"], width, height, audio=sound, crf=args.crf,
                     metadata={"comment": "upscaled with emo_pipeline (Hallo2's high-resolution stage)"}) as writer:
        for frames in batched(upscaler.stream(iter_video_frames(source), settings, on_frame=progress)):
            writer.write(frames)
    print(f"Wrote {out} ({writer.frames} frames, {width}x{height}) in {time.perf_counter() - started:.1f} s")
    return 0


def generate_actions() -> dict[str, argparse.Action]:
    """generate's options by dest name, as argparse defines them (their types and choices)."""
    generate = _parser()._subparsers._group_actions[0].choices["generate"]
    return {action.dest: action for action in generate._actions if action.dest != "help"}


def generate_defaults() -> dict:
    """generate's options with their defaults, by dest name (what a batch job may set)."""
    defaults = vars(_parser().parse_args(["generate"]))
    defaults.pop("command")
    return defaults


def _progress(info) -> None:
    if info.unit == "window":  # context windows: a line per denoising step (all windows done)
        steps = info.total_steps // info.total_clips
        text = (f"  step {-(-info.step // info.total_clips)}/{steps}  window {info.clip + 1}/{info.total_clips}")
        done = info.clip == info.total_clips - 1
    else:
        text = f"  clip {info.clip + 1}/{info.total_clips}  step {info.step}/{info.total_steps}"
        done = info.step % (info.total_steps // info.total_clips) == 0  # a line per clip
    if sys.stdout.isatty():
        print("\r" + text, end="\n" if info.step == info.total_steps else "", flush=True)
    elif done:
        print(text, flush=True)


def check_generate_paths(args: argparse.Namespace) -> None:
    """Inputs that exist and an output that can be written, checked up front."""
    for flag, value in (("--image", args.image), ("--audio", args.audio), ("--model", args.model),
                        ("--wav2vec", args.wav2vec),
                        ("--separate-vocals", None if args.separate_vocals == "auto" else args.separate_vocals)):
        if value and not Path(value).exists():
            raise FileNotFoundError(f"{flag} {value}: no such file or folder.")
    for flag, value, example in (("--image", args.image, "portrait.png"), ("--audio", args.audio, "speech.wav"),
                                 ("--separate-vocals", None if args.separate_vocals == "auto" else args.separate_vocals,
                                  "Kim_Vocal_2.onnx")):
        if value and Path(value).is_dir():
            raise ValueError(f"{flag} {value} is a folder: give a file, such as {Path(value) / example}.")
    if args.separate_vocals == "auto":
        args.separate_vocals = str(separator_beside(args.model))
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name such as {out / 'video.mp4'}.")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the video is written as MP4 (H.264 + AAC); name it {out.with_suffix('.mp4').name}.")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders to be made go under the first one that exists
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out {out}: cannot write in {parent} (no permission). Choose another folder.")


def separator_beside(network: str | None) -> Path:
    """Kim_Vocal_2.onnx in audio_separator/ beside the network or one folder up (Hallo's download)."""
    from .audio.separation import SEPARATOR_FILE, SEPARATOR_FOLDER, find_separator

    base = (Path(network) if Path(network).is_dir() else Path(network).parent) if network else None
    folders = [base, base.parent] if base else []
    found = find_separator(folders)
    if found is None:
        where = " or ".join(str(f / SEPARATOR_FOLDER) for f in folders) or "a folder of your choice"
        raise FileNotFoundError(f"--separate-vocals: no {SEPARATOR_FILE} found; put Hallo's "
                                f"pretrained_models/audio_separator/{SEPARATOR_FILE} in {where}, or give its path.")
    return found


def separate_vocals(waveform: torch.Tensor, sample_rate: int, model: str) -> torch.Tensor:
    """The voice of the song, for the audio features only (the video keeps the whole sound)."""
    from .audio.separation import VocalSeparator

    separator = VocalSeparator(model)

    def chunk(done: int, total: int) -> None:
        if _stop_requested():
            raise KeyboardInterrupt()
        print(f"\r  separating vocals: chunk {done}/{total}", end="\n" if done == total else "", flush=True)

    print(f"Separating the vocals with {Path(model).name} ...")
    return separator.separate(waveform, sample_rate, on_chunk=chunk)


def download_command(args: argparse.Namespace) -> int:
    """`download NAME ...`: fetch, verify and place; then say what to run."""
    from .download import DownloadCancelled, download
    from .download.terminal import TerminalProgress

    try:
        result = download(args.names, args.to, args.revision, convert=args.convert, force=args.force,
                          progress=TerminalProgress(), is_cancelled=_stop_requested)
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


def generate(args: argparse.Namespace) -> int:
    check_generate_paths(args)  # before anything slow: a wrong path should not cost a model load
    started = time.perf_counter()
    render(load_model(args), args, started)
    return 0


# generate's options that choose and load the model (the rest are per video)
MODEL_OPTIONS = ("model", "random", "device", "dtype", "memory_mode", "low_vram", "fp8_weights", "compile", "wav2vec")


def load_model(args: argparse.Namespace):
    """The pipeline generate's options ask for: --model, else the bundled demo model, else tiny random weights."""
    from .pipeline import EMOPipeline

    device = torch.device(args.device)
    # None: the model family's own on a GPU (fp16; bf16 for MEMO), fp32 on the CPU
    dtype = DTYPES[args.dtype] if args.dtype else None
    low_vram, fp8_weights = memory_mode(args, device, dtype)
    memory = dict(low_vram=low_vram, fp8_weights=fp8_weights, compile=args.compile, audio_encoder=args.wav2vec)
    if args.model:
        from .components import load_pipeline

        print(f"Loading model from {args.model} ...")
        pipe = load_pipeline(args.model, device, dtype, **memory)
    elif DEMO_MODEL.is_file() and not args.random:
        from .components import load_pipeline

        print(f"No --model given: using the bundled demo model ({DEMO_MODEL.parent}). It was trained by this "
              "project on drawn cartoon faces only: it animates faces like the built-in one, not photographs. "
              "For photographs: `python -m emo_pipeline download hallo`, then --model models/emo/hallo.")
        pipe = load_pipeline(DEMO_MODEL, device, dtype, **memory)
    else:
        from .tiny import tiny_components

        print("No --model given: using a tiny RANDOM-WEIGHT model. The video will be noise; this run only "
              "checks that the pipeline works. Pass --model <folder> (e.g. Hallo's weights) for real output.")
        pipe = EMOPipeline(*tiny_components(), device=device,
                           dtype=dtype or (torch.float16 if device.type == "cuda" else torch.float32), low_vram=low_vram,
                           compile=args.compile)
        if fp8_weights:
            pipe.store_weights_fp8()
    return pipe


def memory_mode(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None) -> tuple[bool, bool]:
    """(low_vram, fp8_weights): as --low-vram / --fp8-weights or --memory-mode say; `auto` fits the counted peak of
    the model's own sampling into the free device memory and says which mode it took and why."""
    if args.low_vram or args.fp8_weights or args.memory_mode != "auto":
        mode = args.memory_mode if args.memory_mode != "auto" else "normal"
        return args.low_vram or mode != "normal", args.fp8_weights or mode == "low_vram_fp8"
    from .components import default_dtype, find_net
    from .config import tiny_config
    from .loading import config_for, open_network
    from .memory_plan import free_memory, plan_memory

    network = Path(args.model) if args.model else DEMO_MODEL if DEMO_MODEL.is_file() and not args.random else None
    if network is None:
        config = tiny_config()
    else:
        with open_network(find_net(network)) as reader:
            config = config_for(reader)
    from .pipeline import SamplingOptions

    options = SamplingOptions(preset=args.preset, steps=args.steps, guidance_scale=args.cfg,
                              frames_per_clip=args.frames_per_clip, motion_frames=args.motion_frames,
                              cache_interval=args.cache_interval, decode_chunk_size=args.decode_chunk)
    plan = plan_memory(config, free_memory(device), dtype or default_dtype(config, device), options)
    print(f"Memory: {plan.reason}.")
    if plan.mode == "normal" and plan.decode_chunk < args.decode_chunk:
        args.decode_chunk = plan.decode_chunk
    return plan.low_vram, plan.fp8_weights


def render(pipe, args: argparse.Namespace, started: float, portraits: dict | None = None) -> int:
    """One video with a loaded pipeline; returns its frame count. `portraits` keeps each photo's prepared
    reference (face crop, identity, ReferenceNet input) for the next video of the same photo."""
    from .demo_inputs import drawn_face_box, drawn_portrait, speech_like_audio
    from .media import VideoWriter, load_audio, load_image
    from .pipeline import Callbacks, GenerationCancelled, SamplingOptions
    from .render_state import RenderState, fingerprint, resumed_frames, state_folder

    state = None  # the render's kept progress (render_state.py), unless --no-resume
    first: list[torch.Tensor] = []
    if args.image:
        image = load_image(args.image)
    else:
        print("No --image given: using the built-in drawn face.")
        image = drawn_portrait()
    if args.audio:
        waveform, sample_rate = load_audio(args.audio)
    else:
        print("No --audio given: using 4 s of built-in synthetic voice.")
        waveform, sample_rate = speech_like_audio(), 16000

    speech = waveform
    if args.separate_vocals:
        speech = separate_vocals(waveform, sample_rate, args.separate_vocals)
    print("Encoding audio ...")
    audio = pipe.encode_audio(speech, sample_rate, fps=args.fps)
    paste = None
    if args.image:
        from .face import FaceAnalyzer, paste_back
        from .face.reference import crop_to_face

        fraction = args.face_fraction or pipe.config.spec.face_fraction
        key = (str(Path(args.image).resolve()), args.face_index, fraction, args.no_face_crop, id(pipe))
        if portraits is None or key not in portraits:
            folders = [Path(args.model), Path(args.model).parent] if args.model else []
            analyzer = FaceAnalyzer(folders)
            uses_identity = pipe.config.uses_identity_embedding
            if uses_identity:
                analyzer.notice_missing_identity(folders[-1] if folders else "models/emo")
            face = crop_to_face(image, analyzer, args.face_index, fraction, crop=not args.no_face_crop)
            print(f"Faces found: {face.faces_found}; identity embedding: "
                  f"{'yes' if face.identity is not None and uses_identity else 'no'}")
            prepared = pipe.prepare_portrait(face.image, face_box=face.face_box, lip_box=face.lip_box,
                                             identity=face.identity if uses_identity else None)
            if portraits is not None:
                portraits[key] = (face, prepared)
        face, portrait = portraits[key] if portraits is not None else (face, prepared)
        if args.paste_back:  # `first`: the video's first frame, one colour correction for all clips

            def paste(frames: torch.Tensor) -> torch.Tensor:
                if args.colour_match and not first:
                    first.append(frames[0])
                    if state is not None:  # a resumed render no longer makes the first frame
                        state.keep("colour_reference", frames[0])
                return paste_back(frames, image[..., :3], face.box, args.feather, first[0] if first else None)
    else:
        portrait = pipe.prepare_portrait(image, face_box=drawn_face_box())
    options = SamplingOptions(
        seed=args.seed, preset=args.preset, steps=args.steps, guidance_scale=args.cfg,
        frames_per_clip=args.frames_per_clip, motion_frames=args.motion_frames, scheduler=args.scheduler,
        context_overlap=args.context_overlap,
        guidance_interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        cache_interval=args.cache_interval, head_speed=args.head_speed, emotion=args.emotion,
        decode_chunk_size=args.decode_chunk, callbacks=Callbacks(on_step=_progress, is_cancelled=_stop_requested),
    )
    upscaler = None
    if args.upscale > 1:
        folders = [Path(args.model), Path(args.model).parent] if args.model else []
        folders = [f if f.is_dir() else f.parent for f in folders] + [Path("models/emo")]
        settings = upscale_settings(args.upscale, args.upscale_fidelity, args.upscale_background, args.upscale_blend)
        upscaler = load_upscaler(folders, args.random, args.device, torch.float32,
                                 args.upscale_background == "realesrgan")
    print(f"Generating {audio.num_frames} frames ({audio.duration:.2f} s at {audio.fps:g} fps) on {pipe.device} ...")
    side = pipe.config.sample_size * args.upscale
    height, width = (image.shape[0], image.shape[1]) if paste else (side, side)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if upscaler is not None and not getattr(args, "no_resume", False):
        print("--upscale: this render keeps no progress to resume (the upscaler's 16-frame chunks span clips).")
    if not getattr(args, "no_resume", False) and upscaler is None:
        state = RenderState(state_folder(out), fingerprint(
            pipe, portrait, audio, options, sound=torch.as_tensor(waveform).float(),
            image=image if paste else None, sample_rate=sample_rate, width=width, height=height,
            paste=[args.paste_back, args.feather, args.colour_match, args.face_index, args.face_fraction,
                   args.no_face_crop, args.separate_vocals is not None]),
            cap_bytes=int(args.resume_cap * 2**30), every_steps=args.resume_every)
        options.checkpoint = state
        if "colour_reference" in state.kept:
            first.append(state.kept["colour_reference"])
    print(f"Generating {audio.num_frames} frames ({audio.duration:.2f} s at {audio.fps:g} fps) on {pipe.device} ...")
    # Frames are written clip by clip; the file appears only when complete.
    with VideoWriter(out, audio.fps, width, height, audio=(waveform, sample_rate),
                     metadata={"comment": "made with emo_pipeline"}, expected_frames=audio.num_frames) as writer:
        try:
            clips = pipe.iter_clips(portrait, audio, options)
            if upscaler is not None:  # chunked across clips: 16 frames at a time, whatever the clip length
                from .upscale.video import batched

                clips = batched(upscaler.stream(clips, settings))
            for frames in resumed_frames(state, clips, paste):
                writer.write(frames)
        except BaseException as err:
            if state is not None and state.active and state.carry_entry:
                print(f"The progress so far is kept in {state.folder}: the same command continues from there "
                      "(--no-resume starts over).", file=sys.stderr)
            if isinstance(err, GenerationCancelled):  # the stop a signal asked for (STOP), seen between steps
                raise KeyboardInterrupt() from None
            raise
    if state is not None:
        state.finish()
    print(f"Wrote {out} ({audio.num_frames} frames) in {time.perf_counter() - started:.1f} s")
    return audio.num_frames


class Terminated(KeyboardInterrupt):
    """SIGTERM, turned into an exception so that it unwinds (and cleans up) as Ctrl-C does."""


# The signal that asked to stop. The exception a handler raises is lost when it lands in a __del__ or a
# weakref callback (Python only prints it), so sampling also polls this between steps.
STOP: dict[str, int | None] = {"signal": None}


def _on_signal(signum, frame) -> None:
    STOP["signal"] = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _stop_requested() -> bool:
    return STOP["signal"] is not None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    STOP["signal"] = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
    try:
        if args.command == "download":
            return download_command(args)
        if args.command == "benchmark":
            from .benchmark import run_benchmark, write_report

            report = run_benchmark(args.family, args.device, tuple(args.presets.split(",")), tuple(args.modes.split(",")),
                                   args.model, args.budget_s,
                                   on_row=lambda r: print(f"  {r.preset}/{r.mode}: {r.seconds_per_video_second:.2f} s per "
                                                          "video second", flush=True))
            print(report.markdown())
            md, js = write_report(report, args.out)
            print(f"Wrote {md} and {js}")
            return 0
        if args.command == "upscale":
            return upscale_command(args)
        if args.command == "inspect":
            from .components import find_net
            from .loading import describe_checkpoint

            print(describe_checkpoint(find_net(Path(args.checkpoint))))  # a model folder works too
            return 0
        if args.command == "convert":
            from .config import preset
            from .loading import convert_checkpoint, describe_checkpoint

            from .components import find_net

            if Path(args.target).suffix != ".safetensors":
                raise ValueError(f"convert writes a .safetensors file: name the target like "
                                 f"{Path(args.target).with_suffix('.safetensors').name}, not {Path(args.target).name}.")
            source = find_net(Path(args.source))
            print(f"Converting {source} ...")
            config = preset(args.preset) if args.preset else None
            path = convert_checkpoint(source, args.target, DTYPES[args.dtype] if args.dtype else None, config)
            print(describe_checkpoint(path))
            return 0
        if args.command == "train":
            from .training.trainer import TrainSettings, train

            settings = TrainSettings(**{k: getattr(args, k) for k in (
                "data", "out", "stage", "init", "preset", "steps", "batch_size", "lr", "seed", "vae", "wav2vec",
                "mixed_precision", "gradient_accumulation", "gradient_checkpointing", "save_every")})
            path, _ = train(settings)
            print(f"Saved {path}")
            return 0
        if args.command == "train-demo":
            from .training.demo import train_demo

            train_demo(args.out, args.minutes, args.seed, args.clips)
            return 0
        if args.command == "batch":
            from .batch import run_batch

            if not Path(args.jobs).is_file():
                raise FileNotFoundError(f"batch: no jobs file {args.jobs}.")
            return run_batch(args.jobs, args.out_dir, generate_defaults())
        if args.command == "evaluate-demo":
            import json
            import tempfile

            from .training.demo import HELD_OUT_CLIPS, evaluate
            from .training.synthetic import make_dataset

            with tempfile.TemporaryDirectory() as tmp:  # train-demo's held-out clips
                clips = make_dataset(tmp, HELD_OUT_CLIPS, seed=args.seed + 1, seconds=4.0, size=64)
                print(json.dumps(evaluate(Path(args.model), clips, args.seed), indent=1))
            return 0
        if args.command == "synthetic":
            from .training.synthetic import make_dataset

            paths = make_dataset(args.folder, args.count, args.seed, seconds=args.seconds, size=args.size)
            print(f"Wrote {len(paths)} clips to {args.folder}")
            return 0
        return generate(args)
    except (ValueError, FileNotFoundError, DiskFullError) as err:
        print(f"error: {err.strerror if isinstance(err, DiskFullError) else err}", file=sys.stderr)
        return 2
    except Exception as err:
        from .download import DownloadError

        if not isinstance(err, DownloadError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        terminated = isinstance(err, Terminated) or STOP["signal"] == signal.SIGTERM
        print(f"\n{'terminated' if terminated else 'interrupted'}: no output written", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)


if __name__ == "__main__":
    sys.exit(main())
