"""`generate`'s options, in the groups --help shows them in; the model-dependent defaults come from the configs
(model_defaults.py's table at the end of --help), never written out here."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import hallo_config
from ..families import EMOTIONS, FAMILIES, parse_emotions
from ..pose_input import POSE_EXTENSIONS, POSES_FOLDER
from ..sampling.presets import PRESETS
from ..sampling.schedulers import SCHEDULERS
from .model_defaults import defaults_epilog

DTYPES = ("fp32", "fp16", "bf16")  # the torch dtypes: io.loading.PRECISIONS
TABLE = "the model's own: see the table below"



def emotion_argument(value: str) -> "str | list[str]":
    """--emotion: a label or auto, or one label per clip (commas): checked as it is parsed."""
    try:
        return parse_emotions(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None

def add_generate_options(gen: argparse.ArgumentParser, demo: Path, threads_option, upscale_options) -> None:
    """Every generate option, grouped; `threads_option` and `upscale_options` are parser.py's shared ones."""
    gen.epilog = defaults_epilog(demo)
    precisions = "; ".join(f"{precision} for " + ", ".join(f.title for f in FAMILIES.values()
                                                        if f.gpu_precision == precision)
                           for precision in dict.fromkeys(f.gpu_precision for f in FAMILIES.values()))
    # the quality preset is each model's own sampling: the table says it per model, from the configs
    presets = {name: "the model's own sampler and steps (the table below), guidance on every step"
               if preset.steps is None else preset.summary for name, preset in PRESETS.items()}

    inputs = gen.add_argument_group("inputs")
    inputs.add_argument("--image", help="portrait (square, face-centred works best); default: a drawn face")
    inputs.add_argument("--audio", help="speech or song (any format PyAV reads); default: 4 s of built-in synthetic "
                                        "voice")
    inputs.add_argument("--separate-vocals", nargs="?", const="auto", metavar="ONNX",
                        help="drive the face with the voice alone, separated from the music by Kim_Vocal_2.onnx "
                             "(as Hallo does; the video keeps the full sound). Without a path: "
                             "audio_separator/Kim_Vocal_2.onnx beside --model or one folder up (default: off)")
    inputs.add_argument("--poses", metavar="NAME|FOLDER|FILE.npz|VIDEO",
                        help="EchoMimic v2: the hand-pose sequence that drives the gestures with the audio: a driving "
                             "video (its poses found by DWPose: `download dwpose` first), a pose "
                             "folder (0.npy, 1.npy, …) or a .npz of poses, or a demo sequence's name: a folder in "
                             "poses/ of --model's folder or in the model folder's "
                             f"{'/'.join(POSES_FOLDER)}/ (copy EchoMimic v2's assets/halfbody_demo/pose/<name>/ "
                             "there). EchoMimic v2 models stop without it and say so; other models ignore it "
                             "(default: no poses)")
    inputs.add_argument("--no-pose-fit", action="store_true",
                        help="EchoMimic v2: draw the poses where they were recorded, not fitted to the body in --image "
                             "(fitting needs DWPose's models; without them the poses are drawn as recorded and a line "
                             "says so)")
    inputs.add_argument("--pose-extension", choices=list(POSE_EXTENSIONS), default=POSE_EXTENSIONS[0],
                        help="EchoMimic v2: how a pose sequence shorter than the audio is made as long: pingpong "
                             "(forth and back), loop (from the start again) or hold (the last pose kept); a longer "
                             "one is cut (default: %(default)s)")
    inputs.add_argument("--keypoints", metavar="VIDEO|KPS.pth|FILE.npz",
                        help="V-Express: the head motion, from a driving video (the eyes and nose found by SCRFD at the "
                             "model's fps) or a keypoint file (V-Express's kps.pth, or .npz), retargeted to the photo "
                             "by --retarget. Without it the photo's own keypoints are drawn in every frame (fix_face: "
                             "a still head, V-Express's default); other models ignore it")
    inputs.add_argument("--retarget", choices=["fix_face", "no_retarget", "offset_retarget", "naive_retarget"],
                        default=None,
                        help="V-Express: how --keypoints move the photo's face, as its inference.py does: no_retarget "
                             "(the driving keypoints as they are: the same person), offset_retarget (the nose's motion "
                             "added to the photo's keypoints), naive_retarget (the driving face scaled onto the photo's); "
                             "fix_face ignores --keypoints (default: no_retarget with --keypoints, else fix_face)")

    model = gen.add_argument_group("model")
    model.add_argument("--model", help="model folder or network file, or a model's name in the model folder "
                                       "(--model hallo after `download hallo`); default: the bundled demo model")
    model.add_argument("--random", action="store_true", help="use a tiny random-weight model (pipeline check)")
    model.add_argument("--wav2vec", help="audio encoder file or folder to use instead of the one beside the model "
                                         "(e.g. ComfyUI's models/audio_encoders/wav2vec2-base-960h.safetensors; "
                                         "default: the one beside the model)")

    sampling = gen.add_argument_group("sampling", "Defaults that depend on the model are in the table at the end.")
    sampling.add_argument("--seed", type=int, default=0,
                          help="noise seed: the same seed, inputs and settings give the same video")
    sampling.add_argument("--preset", choices=list(PRESETS),
                          help="sampling preset: " + "; ".join(f"{k}: {v}" for k, v in presets.items())
                          + " (default: the model's own sampling, as the table below)")
    sampling.add_argument("--steps", type=int, help=f"denoising steps per clip (default: the preset's, else {TABLE})")
    sampling.add_argument("--cfg", type=float, help=f"guidance scale (default: {TABLE})")
    sampling.add_argument("--scheduler", choices=list(SCHEDULERS), help=f"default: the preset's, else {TABLE}")
    sampling.add_argument("--frames-per-clip", type=int,
                          help=f"clip length; for EchoMimic the context window (default: {TABLE})")
    sampling.add_argument("--motion-frames", type=int,
                          help=f"frames of the previous clip each clip continues from (default: {TABLE})")
    sampling.add_argument("--context-overlap", type=int,
                          help="EchoMimic: frames shared by neighbouring context windows (default: its own, "
                               f"{FAMILIES['echomimic'].context_overlap})")
    sampling.add_argument("--guidance-interval", type=float, nargs=2, metavar=("START", "END"),
                          help="share of the steps that use guidance, e.g. 0 0.5 for the first half (default: 0 1)")
    sampling.add_argument("--emotion", metavar="auto|LABEL|LABEL,LABEL,...", type=emotion_argument,
                          help="MEMO models: the emotion its audio modules express: auto (each clip's detected from "
                               "the voice by emotion2vec+ and MEMO's classifier, as MEMO's own pipeline does; "
                               "`download emotion2vec` first, else neutral with a line saying so), one of "
                               f"{', '.join(EMOTIONS)} for the whole video, or one per clip separated by commas (as "
                               "printed by a detection). Default: auto. Other models ignore it")
    sampling.add_argument("--head-speed", type=float,
                          help="head rotation speed in radians per frame, EMO speed layers only (default: 0, no turn)")

    speed = gen.add_argument_group("speed and memory")
    speed.add_argument("--device", default="auto", help="cuda, cpu, or auto: cuda when torch sees a GPU, else cpu "
                                                        "(default: %(default)s)")
    threads_option(speed)
    speed.add_argument("--dtype", choices=list(DTYPES),
                       help=f"default: the model family's own on CUDA ({precisions}), fp32 on CPU")
    speed.add_argument("--memory-mode", choices=["auto", "normal", "low_vram", "low_vram_fp8"], default="auto",
                       help="auto (default): the fastest mode whose counted peak fits the free device memory, said "
                            "in one line; normal; low_vram; low_vram_fp8 (low-VRAM with fp8 weights)")
    speed.add_argument("--low-vram", action="store_true",
                       help="for 8 GB cards: guided rows one after the other, VAE decodes frame by frame, chunked "
                            "attention")
    speed.add_argument("--fp8-weights", action="store_true",
                       help="store the network's weights in fp8 (half the memory; small quality loss)")
    speed.add_argument("--compile", action="store_true", help="torch.compile the denoiser (minutes to compile once)")
    speed.add_argument("--cache-interval", type=int,
                       help="DeepCache: a full pass every N steps, the ones between reuse its deep features "
                            "(default: the preset's, else 1: off)")
    speed.add_argument("--decode-chunk", type=int, default=8, help="frames the VAE decodes at once")

    face = gen.add_argument_group("face crop and paste-back")
    face.add_argument("--no-face-crop", action="store_true",
                      help="use the image as it is (it should be square and face-centred); EchoMimic v2 always "
                           "takes the whole half-body photo")
    face.add_argument("--face-index", type=int, default=0, help="which face, 0 = the largest")
    face.add_argument("--face-fraction", type=float,
                      help="share of the crop the face takes (default: the model family's, "
                           + ", ".join(f"{f.face_fraction:g} {f.title}" for f in FAMILIES.values()) + ")")
    face.add_argument("--paste-back", action="store_true", help="put the animated crop back into the whole photo")
    face.add_argument("--feather", type=int,
                      help="with --paste-back: pixels over which the crop blends into the photo (default 1/16 of its "
                           "side, 0: hard edge)")
    face.add_argument("--colour-match", action="store_true",
                      help="with --paste-back: match the crop's colours to the photo's")

    output = gen.add_argument_group("output")
    output.add_argument("--out", default="outputs/emo.mp4", help="output MP4 (default: %(default)s)")
    output.add_argument("--fps", type=float, help=f"video frame rate (default: {TABLE})")
    side = hallo_config().sample_size
    output.add_argument("--upscale", type=int, default=1, choices=(1, 2, 3, 4),
                        help="Hallo2's high-resolution stage before any paste-back: the face restored by its temporal "
                             f"CodeFormer and the video upscaled xN (2: {side}² to {2 * side}²); needs "
                             "hallo2/net_g.pth (download hallo2-upscaler; S-Lab licence, non-commercial). "
                             "Default 1: off")
    upscale_options(output, "--upscale-")

    resume = gen.add_argument_group("resuming a stopped render")
    resume.add_argument("--no-resume", action="store_true",
                        help="keep no progress: by default each finished clip is kept beside --out (in "
                             ".<name>.emo-resume/) so that a stopped render continues where it was; removed once the "
                             "MP4 is complete")
    resume.add_argument("--resume-cap", type=float, default=20.0, metavar="GIB",
                        help="the most disk the kept progress may take, in GiB (default: %(default)s); past it, or "
                             "when the disk is short, the render goes on without keeping progress")
    resume.add_argument("--resume-every", type=int, default=1, metavar="N",
                        help="EchoMimic: keep the whole video's latents every N denoising steps (default: %(default)s)")
