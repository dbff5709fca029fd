"""`generate`: portrait + audio → talking-head MP4, and the model loading and rendering that `batch` shares."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..sampling.steps import StepInfo
from .model_folder import (default_model_folder, dwpose_search_folders, model_argument, pose_search_folders,
                           resolve_model, resolve_poses)
from .output_checks import check_output
from .parser import DEMO_MODEL
from .progress import RenderProgress
from .stop import stop_requested
from .upscale import load_upscaler, upscale_settings

PROGRESS = RenderProgress()  # the render in progress on the terminal


def _progress(info: StepInfo) -> None:
    """Each denoising step of the render (tests and tools may stand in for this function)."""
    PROGRESS(info)


def check_generate_paths(args: argparse.Namespace) -> None:
    """Inputs that exist and an output that can be written, checked up front. --model may name a model in the
    default model folder (`--model hallo` after `download hallo`)."""
    args.model = resolve_model(args.model)
    if args.model and not Path(args.model).exists():
        raise FileNotFoundError(f"--model {args.model}: no such file or folder, here or in the model folder "
                                f"{default_model_folder()}; `python -m emo_pipeline download hallo` fetches Hallo's "
                                "there (then --model hallo), or give the model's path.")
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
    if args.poses:
        args.poses = poses_path(args.poses, args.model)
    if isinstance(getattr(args, "emotion", None), str):  # a batch job's, not checked by the parser
        from ..families import parse_emotions

        args.emotion = parse_emotions(args.emotion)
    if getattr(args, "keypoints", None) and not Path(args.keypoints).is_file():
        raise FileNotFoundError(f"--keypoints {args.keypoints}: no such file (give a driving video, V-Express's "
                                "kps.pth or a .npz of keypoints).")
    out = Path(args.out)
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name such as {out / 'video.mp4'}.")
    if out.suffix.lower() != ".mp4":
        raise ValueError(f"--out {out}: the video is written as MP4 (H.264 + AAC); name it {out.with_suffix('.mp4').name}.")
    check_output(out, "--out", resume=not getattr(args, "no_resume", False))


def poses_path(value: str, model: str | None, base: Path | None = None) -> str:
    """--poses as a path: the pose folder or .npz given, or the demo sequence of that name (see
    model_folder.pose_search_folders); a name found nowhere is said with where demo sequences go."""
    from ..pose_input import where_demo_poses_go

    found = resolve_poses(value, model, base)
    if Path(found).exists():
        return found
    folders = pose_search_folders(model)
    raise FileNotFoundError(f"--poses {value}: no such pose folder or .npz, and no demo pose sequence of that name in "
                            f"{' or '.join(str(f) for f in folders)}. {where_demo_poses_go(folders[-1])}; or give the "
                            "path of a pose folder (0.npy, 1.npy, …) or a .npz.")


def separator_beside(network: str | None) -> Path:
    """Kim_Vocal_2.onnx in audio_separator/ beside the network or one folder up (Hallo's download)."""
    from ..audio.separation import SEPARATOR_FILE, SEPARATOR_FOLDER, find_separator

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
    from ..audio.separation import VocalSeparator

    separator = VocalSeparator(model)

    def chunk(done: int, total: int) -> None:
        if stop_requested():
            raise KeyboardInterrupt()
        print(f"\r  separating vocals: chunk {done}/{total}", end="\n" if done == total else "", flush=True)

    print(f"Separating the vocals with {Path(model).name} ...")
    return separator.separate(waveform, sample_rate, on_chunk=chunk)


def generate(args: argparse.Namespace) -> int:
    from ..cpu_threads import decide_threads

    decide_threads(args.threads)  # a bad --threads or EMO_THREADS is named before anything else
    check_generate_paths(args)  # before anything slow: a wrong path should not cost a model load
    started = time.perf_counter()
    render(load_model(args), args, started)
    return 0


# generate's options that choose and load the model (the rest are per video)
MODEL_OPTIONS = ("model", "random", "device", "dtype", "memory_mode", "low_vram", "fp8_weights", "compile", "wav2vec")


def load_model(args: argparse.Namespace):
    """The pipeline generate's options ask for: --model, else the bundled demo model, else tiny random weights."""
    from ..cpu_threads import set_cpu_threads
    from ..io.loading import PRECISIONS
    from ..pipeline import EMOPipeline

    # before the weights load (which uses them too); a bad --threads or EMO_THREADS stops here
    set_cpu_threads(args.device, getattr(args, "threads", None), getattr(args, "cpu_sharing", None))
    device = torch.device(args.device)
    # None: the model family's own on a GPU (fp16; bf16 for MEMO), fp32 on the CPU
    dtype = PRECISIONS[args.dtype] if args.dtype else None
    low_vram, fp8_weights = memory_mode(args, device, dtype)
    memory = dict(low_vram=low_vram, fp8_weights=fp8_weights, compile=args.compile, audio_encoder=args.wav2vec)
    if args.model or (DEMO_MODEL.is_file() and not args.random):
        from ..components import load_pipeline

        if args.model:
            print(f"Loading model from {args.model} ...")
        else:
            print(f"No --model given: using the bundled demo model ({DEMO_MODEL.parent}). It was trained by this "
                  "project on drawn cartoon faces only: it animates faces like the built-in one, not photographs. "
                  "For photographs: `python -m emo_pipeline download hallo`, then --model "
                  f"{model_argument(default_model_folder() / 'hallo')}.")
        pipe = load_pipeline(args.model or DEMO_MODEL, device, dtype, **memory)
    else:
        from ..components import default_dtype
        from ..config import tiny_config
        from ..tiny import tiny_components

        print("No --model given: using a tiny RANDOM-WEIGHT model. The video will be noise; this run only "
              "checks that the pipeline works. Pass --model <folder> (e.g. Hallo's weights) for real output.")
        config = tiny_config()
        pipe = EMOPipeline(*tiny_components(config), device=device, dtype=dtype or default_dtype(config, device),
                           low_vram=low_vram, compile=args.compile)
        if fp8_weights:
            pipe.store_weights_fp8()
    return pipe


def memory_mode(args: argparse.Namespace, device: torch.device, dtype: torch.dtype | None) -> tuple[bool, bool]:
    """(low_vram, fp8_weights): as --low-vram / --fp8-weights or --memory-mode say; `auto` fits the counted peak of
    the model's own sampling into the free device memory and says which mode it took and why."""
    if args.low_vram or args.fp8_weights or args.memory_mode != "auto":
        mode = args.memory_mode if args.memory_mode != "auto" else "normal"
        return args.low_vram or mode != "normal", args.fp8_weights or mode == "low_vram_fp8"
    from ..memory_plan import free_memory, plan_for_network
    from ..sampling.steps import SamplingOptions

    network = Path(args.model) if args.model else DEMO_MODEL if DEMO_MODEL.is_file() and not args.random else None
    options = SamplingOptions(preset=args.preset, steps=args.steps, guidance_scale=args.cfg,
                              frames_per_clip=args.frames_per_clip, motion_frames=args.motion_frames,
                              cache_interval=args.cache_interval, decode_chunk_size=args.decode_chunk)
    plan = plan_for_network(network, device, free_memory(device), dtype, options)
    print(f"Memory: {plan.reason}.")
    if plan.mode == "normal" and plan.decode_chunk < args.decode_chunk:
        args.decode_chunk = plan.decode_chunk
    return plan.low_vram, plan.fp8_weights


def read_poses(args: argparse.Namespace, fps: float):
    """--poses read: a pose folder or .npz, or a driving video run through DWPose (found beside --model or in the
    default model folder's dwpose/) at the model's frame rate, with its progress printed."""
    from ..pose_input import dwpose_paths, is_video, load_poses, missing_dwpose, poses_from_video_file

    if not is_video(args.poses):
        return load_poses(args.poses)
    folders = dwpose_search_folders(args.model)
    files = dwpose_paths(folders)
    if files is None:
        raise missing_dwpose(folders, f"--poses {args.poses} (poses from a driving video)")
    print(f"DWPose: finding the poses in {Path(args.poses).name} at {fps:g} fps ...")
    shown = [0.0]

    def on_frame(done: int) -> None:
        if time.monotonic() - shown[0] > 10:  # a line every 10 s: DWPose runs two networks a frame
            shown[0] = time.monotonic()
            print(f"DWPose: {done} frames")

    poses = poses_from_video_file(args.poses, files, fps=fps, on_frame=on_frame)
    print(f"DWPose: {len(poses)} frames of poses from {Path(args.poses).name}")
    return poses


def fit_poses(poses, image, args: argparse.Namespace):
    """The poses fitted to the photo's body when DWPose's models are there (a line says how, or why not)."""
    from ..pose_input import dwpose_paths, fit_poses_to_photo
    from ..poses.sequence import PoseError

    files = dwpose_paths(dwpose_search_folders(args.model))
    if files is None:
        print("poses: not fitted to the photo (that needs DWPose: `python -m emo_pipeline download dwpose`); drawn as "
              "recorded. --no-pose-fit says this is meant.")
        return poses
    try:
        fitted, line = fit_poses_to_photo(poses, image, files)
    except PoseError as error:  # the render goes on with the poses as recorded
        print(f"poses: not fitted to the photo: {error}")
        return poses
    print(line)
    return fitted


def render_emotion(pipe, args: argparse.Namespace, waveform, sample_rate: int, audio):
    """MEMO's emotion for this render: --emotion as given, or each clip's detected from the unseparated sound (auto,
    the default); the line says which."""
    from ..emotion_input import emotions_for_render, uses_emotion

    folders = [Path(args.model), Path(args.model).parent] if args.model else []
    folders = [f if f.is_dir() else f.parent for f in folders] + [default_model_folder()]
    if uses_emotion(pipe.config) and getattr(args, "emotion", None) in (None, "auto"):
        print("Detecting the emotion of each clip ...")
    emotion, line = emotions_for_render(pipe.config, getattr(args, "emotion", None), waveform, sample_rate,
                                        audio.num_frames, audio.clip_length, folders, str(pipe.device))
    if line:
        print(line)
    return emotion


def face_keypoints(pipe, portrait, audio, args: argparse.Namespace):
    """V-Express's keypoints for this render: the photo's own (fix_face), or --keypoints retargeted (a line says
    which)."""
    from ..face import FaceAnalyzer
    from ..keypoint_input import driving_keypoints, keypoints_for_render

    folders = [Path(args.model), Path(args.model).parent] if args.model else []
    folders = [f if f.is_dir() else f.parent for f in folders]
    analyzer = FaceAnalyzer(folders)
    keypoints, retarget = getattr(args, "keypoints", None), getattr(args, "retarget", None)
    strategy = retarget or ("no_retarget" if keypoints else "fix_face")
    driving = None
    if keypoints and strategy != "fix_face":
        print(f"Face keypoints: reading {Path(keypoints).name} ...")
        driving = driving_keypoints(keypoints, analyzer, pipe.config.sample_size, audio.fps)
    elif keypoints:
        print(f"--keypoints {keypoints}: ignored with --retarget fix_face (the photo's keypoints in every frame).")
    sequence, line = keypoints_for_render(pipe.config, portrait.image, audio.num_frames, analyzer, audio.fps,
                                          strategy, driving)
    print(line)
    return sequence


def render(pipe, args: argparse.Namespace, started: float, portraits: dict | None = None) -> int:
    """One video with a loaded pipeline; returns its frame count. `portraits` keeps each photo's prepared
    reference (face crop, identity, ReferenceNet input) for the next video of the same photo."""
    from ..cpu_threads import threads_note
    from ..demo_inputs import drawn_face_box, drawn_portrait, speech_like_audio
    from ..io.media import VideoWriter, load_audio, load_image
    from ..keypoint_input import uses_face_keypoints
    from ..pose_input import ignored_poses, missing_poses, poses_for_render, uses_poses
    from ..render_state import RenderState, carry_check, fingerprint, resumed_frames, state_folder
    from ..sampling.steps import Callbacks, GenerationCancelled, SamplingOptions

    state = None  # the render's kept progress (render_state.py), unless --no-resume
    first: list[torch.Tensor] = []
    pose_sequence = None  # EchoMimic v2's hand poses, read before the slow work so that a bad file stops here
    if uses_poses(pipe.config):
        if not args.poses:
            raise missing_poses(pipe.config)
        pose_sequence = read_poses(args, pipe.config.fps)
    elif args.poses:
        print(ignored_poses(pipe.config, f"--poses {args.poses}"))
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
    poses = None
    if pose_sequence is not None and args.image and not args.no_pose_fit:
        pose_sequence = fit_poses(pose_sequence, image, args)
    if pose_sequence is not None:
        poses, said = poses_for_render(pipe.config, pose_sequence, audio.num_frames, args.pose_extension, audio.fps)
        if said:
            print(said)
    paste = None
    if args.image:
        from ..face import FaceAnalyzer, paste_back
        from ..face.reference import crop_to_face

        fraction = args.face_fraction or pipe.config.spec.face_fraction
        key = (str(Path(args.image).resolve()), args.face_index, fraction, args.no_face_crop, id(pipe))
        if portraits is None or key not in portraits:
            folders = [Path(args.model), Path(args.model).parent] if args.model else []
            analyzer = FaceAnalyzer(folders)
            uses_identity = pipe.config.uses_identity_embedding
            if uses_identity:
                analyzer.notice_missing_identity(folders[-1] if folders else default_model_folder())
            # EchoMimic v2 takes the whole half-body photo (its infer.py resizes it), not a face crop
            crop = not args.no_face_crop and pipe.config.spec.crops_to_face
            face = crop_to_face(image, analyzer, args.face_index, fraction, crop=crop)
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
    emotion = render_emotion(pipe, args, waveform, sample_rate, audio)
    if uses_face_keypoints(pipe.config):
        poses = face_keypoints(pipe, portrait, audio, args)
    elif getattr(args, "keypoints", None):
        print(f"--keypoints {args.keypoints}: ignored; {pipe.config.spec.title} draws no face keypoints (V-Express does).")
    options = SamplingOptions(
        seed=args.seed, preset=args.preset, steps=args.steps, guidance_scale=args.cfg,
        frames_per_clip=args.frames_per_clip, motion_frames=args.motion_frames, scheduler=args.scheduler,
        context_overlap=args.context_overlap,
        guidance_interval=tuple(args.guidance_interval) if args.guidance_interval else None,
        cache_interval=args.cache_interval, head_speed=args.head_speed, emotion=emotion, poses=poses,
        decode_chunk_size=args.decode_chunk, callbacks=Callbacks(on_step=_progress, is_cancelled=stop_requested),
    )
    upscaler = None
    if args.upscale > 1:
        folders = [Path(args.model), Path(args.model).parent] if args.model else []
        folders = [f if f.is_dir() else f.parent for f in folders] + [default_model_folder()]
        settings = upscale_settings(args.upscale, args.upscale_fidelity, args.upscale_background, args.upscale_blend)
        upscaler = load_upscaler(folders, args.random, args.device, torch.float32,
                                 args.upscale_background == "realesrgan")
    print(f"Generating {audio.num_frames} frames ({audio.duration:.2f} s at {audio.fps:g} fps) on {pipe.device}"
          f"{threads_note(pipe.device)} ...")
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
            cap_bytes=int(args.resume_cap * 2**30), every_steps=args.resume_every,
            check_carry=carry_check(pipe, audio, options), frame_shape=(height, width))
        options.checkpoint = state
        if "colour_reference" in state.kept:
            first.append(state.kept["colour_reference"])
    # Frames are written clip by clip; the file appears only when complete.
    with VideoWriter(out, audio.fps, width, height, audio=(waveform, sample_rate),
                     metadata={"comment": "made with emo_pipeline"}, expected_frames=audio.num_frames) as writer:
        try:
            PROGRESS.start(audio.num_frames / audio.fps)
            clips = pipe.iter_clips(portrait, audio, options)
            if upscaler is not None:  # chunked across clips: 16 frames at a time, whatever the clip length
                from ..upscale.video import batched

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
        finally:
            PROGRESS.close()
    if state is not None:
        state.finish()
    print(f"Wrote {out} ({audio.num_frames} frames) in {time.perf_counter() - started:.1f} s")
    return audio.num_frames
