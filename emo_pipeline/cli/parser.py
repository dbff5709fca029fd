"""The command line's arguments: every subcommand and its options (each with its default in --help), and
generate's options as a batch job reads them. Nothing heavy is imported here: `--help` and a wrong option
answer at once, before torch is loaded."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..families import EMOTIONS
from ..download.catalogue import DOWNLOADS, human_size
from ..sampling.presets import PRESETS
from ..sampling.schedulers import SCHEDULERS
from .generate_options import DTYPES, add_generate_options
from .model_folder import default_model_folder

DESCRIPTION = "EMO talking portraits: a portrait and an audio clip in, a talking-head MP4 out."
# Trained by `python -m emo_pipeline train-demo` on the synthetic drawn-face set; ships with the pack.
DEMO_MODEL = Path(__file__).resolve().parents[2] / "models" / "demo" / "net.safetensors"
MODEL_FOLDER_RULE = ("ComfyUI's models/emo when the pack is in ComfyUI's custom_nodes/ (a folder "
                     "extra_model_paths.yaml adds: give it as --to), else ~/.cache/emo-portrait/models "
                     "($XDG_CACHE_HOME/emo-portrait/models when that is set)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(), formatter_class=HelpWithDefaults)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpWithDefaults)

    dl = add("download", "fetch a family's files from the hub into the model folder (resumable, verified, only "
                         "what the loaders read)")
    dl.add_argument("names", nargs="+", metavar="NAME",
                    help="what to fetch: " + ", ".join(f"{d.name} (~{human_size(d.approx_bytes)})" for d in DOWNLOADS.values()))
    dl.add_argument("--to", help=f"the model folder (default: {MODEL_FOLDER_RULE}; here: {default_model_folder()})")
    dl.add_argument("--revision", default=None, help="branch, tag or commit of the hub repositories; files placed "
                    "from another one are fetched again where they differ (default: main, and files already placed "
                    "from any revision are kept)")
    dl.add_argument("--convert", action="store_true",
                    help="also write each family's network as our single safetensors file (<to>/<name>.safetensors; "
                         "EchoMimic's in its folder, beside its whisper file; EchoMimic v2's always)")
    dl.add_argument("--force", action="store_true", help="replace files in the way that differ from the hub's, "
                    "damaged ones included (default: off: such files are named and left as they are)")
    bench = add("benchmark", "time each preset and memory mode on this machine (random weights, nothing to "
                             "download) and compare the measured peak with the counted one")
    bench.add_argument("--device", default="auto",
                       help="cuda runs the full size (512²), cpu the tiny size; auto: cuda when torch sees a GPU, "
                            "else cpu (default: %(default)s)")
    bench.add_argument("--family", default="hallo", choices=["hallo", "hallo2", "joyhallo", "emo", "echomimic", "echomimic-acc",
                                                                 "memo"],
                       help="which family's network (default: %(default)s)")
    bench.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: %(default)s)")
    bench.add_argument("--modes", default="normal,low_vram,low_vram_fp8", help="comma-separated (default: %(default)s)")
    bench.add_argument("--model", help="real weights instead of random ones, a model folder or network file "
                                       "(default: random weights)")
    bench.add_argument("--budget-s", type=float, default=600.0,
                       help="the whole run's time; fewer steps are run and scaled when needed (default: %(default)s)")
    bench.add_argument("--out", default="benchmark-results", help="folder for benchmark.md and benchmark.json "
                                                                  "(default: %(default)s)")
    bench.add_argument("--quality", metavar="CLIP",
                       help="instead: render this audio clip with each preset and memory mode of --model (default: "
                            "the bundled demo model) and print per mode seconds per video second beside Sync-C, "
                            "Sync-D, CSIM and PSNR against the exact path (the quality preset in normal mode)")
    bench.add_argument("--image", help="with --quality: the portrait (default: the built-in drawn face); CSIM is "
                                       "measured against it")
    bench.add_argument("--metrics", metavar="FOLDER", help="with --quality: the folder holding metrics/ (SyncNet and "
                       f"S3FD, `download metrics`) and the face models (default: the model folder, "
                       f"{default_model_folder()})")
    gen = add("generate", "portrait + audio → talking-head MP4")
    add_generate_options(gen, DEMO_MODEL, _threads_option, _upscale_options)
    up = add("upscale", "an existing MP4 through Hallo2's high-resolution stage (face restored by its temporal "
                        "CodeFormer, video upscaled xN); S-Lab licence, non-commercial")
    up.add_argument("video", help="the MP4 (or any video PyAV reads), e.g. a generated face video")
    up.add_argument("--out", required=True, help="output MP4")
    up.add_argument("--scale", type=int, default=2, choices=(1, 2, 3, 4), help="upscale factor (default: %(default)s)")
    _upscale_options(up, "--")
    up.add_argument("--models", action="append",
                    help="folder holding hallo2/net_g.pth and realesrgan/RealESRGAN_x2plus.pth (and the face "
                         f"detector); repeatable (default: the model folder, {default_model_folder()})")
    up.add_argument("--random", action="store_true", help="tiny random-weight networks (a pipeline check)")
    up.add_argument("--device", default="auto", help="cuda, cpu, or auto: cuda when torch sees a GPU, else cpu "
                                                     "(default: %(default)s)")
    _threads_option(up)
    up.add_argument("--dtype", choices=list(DTYPES), default="fp32", help="default: %(default)s")
    up.add_argument("--crf", type=int, default=19, help="H.264 quality (default: %(default)s)")
    ins = add("inspect", "say what a checkpoint file (or model folder) is and what it lacks")
    ins.add_argument("checkpoint", help="a network file or a model folder (or its name in the model folder)")
    conv = add("convert", "net.pth (or EchoMimic's folder) → one .safetensors file with its config inside")
    conv.add_argument("source", help="a network file or a model folder")
    conv.add_argument("target", help="the .safetensors file to write")
    conv.add_argument("--dtype", choices=list(DTYPES), help="store in this precision (default: as the source)")
    conv.add_argument("--preset", help="config preset when the source carries none and is not Hallo's "
                                       "(default: the one the files tell)")
    tr = add("train", "train one of EMO's three stages on a folder of videos")
    tr.add_argument("--data", required=True, help="folder of video files with sound")
    tr.add_argument("--out", required=True, help="folder for network.safetensors and the resume state")
    tr.add_argument("--stage", type=int, required=True, choices=[1, 2, 3],
                    help="1: ReferenceNet, Backbone and face locator on single frames; 2: the temporal and audio "
                         "modules on clips; 3: the temporal modules and the speed layers")
    tr.add_argument("--init", help="network to start from, ours or Hallo's net.pth to fine-tune (default: a new "
                                   "network of --preset)")
    tr.add_argument("--preset", default="tiny", help="config of a network built from scratch")
    tr.add_argument("--steps", type=int, default=1000, help="optimiser steps")
    tr.add_argument("--batch-size", type=int, default=2, help="clips per step")
    tr.add_argument("--lr", type=float, default=1e-5, help="learning rate")
    tr.add_argument("--seed", type=int, default=0, help="seed of the weights drawn and of the clips picked")
    tr.add_argument("--vae", help="VAE folder or file (default: a tiny random VAE, for checks only)")
    tr.add_argument("--wav2vec", help="wav2vec2 folder or file (default: a tiny random one, for checks only)")
    tr.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"], help="accelerate's mixed precision")
    tr.add_argument("--gradient-accumulation", type=int, default=1, help="steps whose gradients add up before "
                                                                         "one update")
    tr.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward "
                                                                          "pass (less memory, slower)")
    tr.add_argument("--save-every", type=int, default=500, help="steps between saved networks and resume states")
    demo = add("train-demo", "train the bundled demo model on the synthetic set (CPU)")
    demo.add_argument("--out", default="models/demo", help="folder for the network and its training report")
    demo.add_argument("--minutes", type=float, default=55.0, help="training time")
    demo.add_argument("--seed", type=int, default=0, help="seed of the synthetic set and the weights")
    demo.add_argument("--clips", type=int, default=48, help="synthetic clips to train on")
    batch = add("batch", "many videos from a jobs file (JSON lines), resumable; on several GPUs under "
                         "`accelerate launch`")
    batch.add_argument("jobs", help="JSON lines: {\"image\": ..., \"audio\": ..., \"out\": ..., any generate option}")
    batch.add_argument("--out-dir", default="renders", help="where the videos and results.jsonl go (default: %(default)s)")
    batch.add_argument("--evaluate", action="store_true",
                       help="score each finished video (Sync-C, Sync-D, offset; CSIM against the job's image when the "
                            "face models are there) into its results.jsonl line, with SyncNet and S3FD from the model "
                            "folder's metrics/ (`download metrics`)")
    _threads_option(batch, " (each process's)")
    ev = add("evaluate-demo", "lip sync, colour drift and head motion of a model on held-out drawn faces")
    ev.add_argument("--model", default=str(DEMO_MODEL.parent), help="model folder")
    ev.add_argument("--seed", type=int, default=0, help="seed of the held-out clips and the sampling")
    score = add("evaluate", "score videos as the field's papers do: lip sync (SyncNet's Sync-C, Sync-D and the "
                            "audio-video offset) and, with --reference, identity (ArcFace CSIM)")
    score.add_argument("videos", nargs="+", metavar="VIDEO", help="the videos (any PyAV reads), with sound unless "
                                                                  "--audio is given")
    score.add_argument("--audio", help="score against this sound (default: each video's own track)")
    score.add_argument("--reference", metavar="IMAGE", help="the portrait: CSIM, the cosine of ArcFace embeddings of "
                       "its face and each tracked frame's face (needs the face models: `download face`; default: no "
                       "CSIM)")
    score.add_argument("--json", action="store_true", help="print JSON (one object per video) instead of a table")
    score.add_argument("--models", metavar="FOLDER", help="the folder holding metrics/syncnet_v2.model and "
                       f"metrics/sfd_face.pth (`download metrics`) and the face models (default: the model folder, "
                       f"{default_model_folder()})")
    score.add_argument("--device", default="auto", help="cuda, cpu, or auto: cuda when torch sees a GPU, else cpu "
                                                        "(default: %(default)s)")
    syn = add("synthetic", "write the synthetic talking-face set")
    syn.add_argument("folder", help="where the clips go")
    syn.add_argument("--count", type=int, default=32, help="clips")
    syn.add_argument("--seed", type=int, default=0, help="seed of the faces, voices and motions")
    syn.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    syn.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.description = (f"{DESCRIPTION} Commands: {', '.join(sub.choices)}. "
                          f"`{parser.prog} COMMAND --help` gives a command's options and their defaults.")
    return parser


def program_name() -> str:
    """`emo-portrait` when run as the script `pip install -e .` makes, else `python -m emo_pipeline`."""
    return "emo-portrait" if Path(sys.argv[0]).stem == "emo-portrait" else "python -m emo_pipeline"


class HelpWithDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it: "(default: off)" for a flag."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        """Paragraphs are filled as usual; one whose lines are indented (a table) is kept as it is."""
        return "\n\n".join(paragraph if paragraph.startswith("  ") else super(HelpWithDefaults, self)._fill_text(
            paragraph, width, indent) for paragraph in text.split("\n\n"))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not action.option_strings or action.required \
                or action.default is argparse.SUPPRESS:
            return text
        return text + (" (default: off)" if action.nargs == 0 else " (default: %(default)s)")


def _threads_option(parser: argparse.ArgumentParser, whose: str = "") -> None:
    parser.add_argument("--threads", type=int, metavar="N",
                        help=f"CPU threads{whose} when running on the CPU (default: the cores this process may use, "
                             "split among the processes sharing them: batch's processes, torchrun's "
                             "LOCAL_WORLD_SIZE; the environment variable EMO_THREADS=N does the same as --threads, "
                             "e.g. for renders started side by side)")


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


def generate_actions() -> dict[str, argparse.Action]:
    """generate's options by dest name, as argparse defines them (their types and choices)."""
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    return {action.dest: action for action in generate._actions if action.dest != "help"}


def generate_defaults() -> dict:
    """generate's options with their defaults, by dest name (what a batch job may set)."""
    defaults = vars(build_parser().parse_args(["generate"]))
    defaults.pop("command")
    return defaults
