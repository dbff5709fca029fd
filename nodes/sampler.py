"""EMO Sampler: portrait + audio features → video frames, one per audio frame, clip by clip."""

from __future__ import annotations

import logging
import warnings
from typing import Iterator

import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.config import preset as config_preset
from ..emo_pipeline.emotion_input import emotions_for_render, uses_emotion
from ..emo_pipeline.families import AUTO_EMOTION
from ..emo_pipeline.keypoint_input import keypoints_for_render, uses_face_keypoints
from ..emo_pipeline.memory_plan import memory_required
from ..emo_pipeline.pose_input import poses_for_render
from ..emo_pipeline.sampling.presets import PRESETS, resolve_options
from ..emo_pipeline.sampling.schedulers import SCHEDULERS
from ..emo_pipeline.sampling.steps import Callbacks, GenerationCancelled, SamplingOptions
from .face import face_analyzer
from .emotion import EMOTIONS
from .face_keypoints import FACE_KEYPOINTS
from .model_loader import FOLDER
from .notify import relays_warnings
from .poses import POSES, extension_of
from .preview import step_previewer
from .sampler_options import MODEL_DEFAULT, OPTIONS, settings


FACE_KEYPOINTS_INPUT = {"tooltip": "V-Express: the head motion from EMO Load Face Keypoints (a driving video's eyes and "
                                   "nose, retargeted to the photo). Without it the photo's own keypoints are drawn in "
                                   "every frame: a still head (its fix_face). Other models ignore it."}

EMOTIONS_INPUT = {"tooltip": "MEMO: one emotion per clip from EMO Detect Emotion (change any clip's there); it "
                             "overrides EMO Family Options' emotion. Other models ignore it."}

AUTO = "auto"  # the scheduler widget's "the model's own" (DDIM, or flow-matching Euler for MEMO)
CUSTOM = "custom"
# "model default" is the engine's exact default (its preset "quality", with the scheduler widget's choice)
PRESET_CHOICES = [MODEL_DEFAULT, *(name for name in PRESETS if name != "quality"), CUSTOM]
# Which of the steps, cfg and scheduler widgets each preset decides (their values are then not used); the
# frontend reads it from web/emo_presets.json (tests/test_presets_table.py writes and checks that file).
PRESET_DECIDES: dict[str, tuple[str, ...]] = {
    MODEL_DEFAULT: ("steps", "cfg"),
    **{name: ("steps", "cfg", "scheduler") for name in PRESET_CHOICES if name not in (MODEL_DEFAULT, CUSTOM)},
    CUSTOM: (),
}


# What each widget does, and which presets leave it unused (PRESET_DECIDES) with what runs instead.
WIDGET_USE = {
    "steps": "Denoising steps",
    "cfg": "Guidance scale; 1 turns guidance off (twice as fast)",
    "scheduler": "The sampler; auto: the model's own (DDIM; flow_euler for MEMO, a rectified-flow model that also "
                 "takes dpmpp_2m and unipc)",
}
# The model's own steps and cfg, as the families' configs state them (the bundled demo's are in its file).
OWN_OF = {"Hallo": "hallo", "EchoMimic": "echomimic", "EchoMimic acc": "echomimic-acc", "MEMO": "memo"}
DEMO_OWN = {"steps": 10, "cfg": 2.0}  # models/demo/net.safetensors' config (tests/test_presets_table.py reads it)


def model_own(widget: str) -> str:
    field = {"steps": "steps", "cfg": "guidance_scale"}[widget]
    values = [f"{getattr(config_preset(name), field):g} {title}" for title, name in OWN_OF.items()]
    return f"the model's own {widget} ({', '.join(values)}, {DEMO_OWN[widget]:g} the demo)"


def preset_runs(preset: str, widget: str) -> str:
    """What runs for `widget` when `preset` decides it."""
    if preset == MODEL_DEFAULT or widget == "cfg":
        return model_own(widget)
    return {"steps": f"{PRESETS[preset].steps} steps", "scheduler": str(PRESETS[preset].scheduler)}[widget]


def _and(items: list[str]) -> str:
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def widget_tooltip(widget: str) -> str:
    used = [p for p in PRESET_CHOICES if widget not in PRESET_DECIDES[p]]
    runs: dict[str, list[str]] = {}  # what runs instead → the presets that run it
    for p in PRESET_CHOICES:
        if widget in PRESET_DECIDES[p]:
            runs.setdefault(preset_runs(p, widget), []).append(p)
    ignored = "; ".join(f"{_and(presets)} run{'s' if len(presets) == 1 else ''} {what}"
                        for what, presets in runs.items())
    return (f"{WIDGET_USE[widget]}. Used only with preset {_and(used)}; other presets ignore it: "
            f"{ignored}. After a run the node shows what ran.")


PRESET_TOOLTIP = ("Who decides steps, cfg and scheduler. custom: the three widgets. model default: the model's own "
                  "steps and cfg (those two widgets are ignored; the scheduler widget is used). "
                  + "; ".join(f"{k}: {v.summary}, at the model's cfg (steps, cfg and scheduler widgets ignored)"
                              for k, v in PRESETS.items() if k in PRESET_CHOICES)
                  + ". After a run the node shows the steps, cfg and scheduler that ran.")


OPTIONS_DECIDED = ("guidance_end", "cache_interval")  # EMO Sampler Options' settings that balanced and fast set


def presets_table() -> dict:
    """web/emo_presets.json: which widgets each preset decides and what runs instead ("model": the loaded
    model's own), for the frontend to grey out widgets whose value is not used."""
    presets = {}
    for name in PRESET_CHOICES:
        named = name not in (MODEL_DEFAULT, CUSTOM)
        runs = {w: ("model" if name == MODEL_DEFAULT or w == "cfg" else
                    {"steps": PRESETS[name].steps, "scheduler": PRESETS[name].scheduler}[w]) for w in PRESET_DECIDES[name]}
        presets[name] = {"decides": list(PRESET_DECIDES[name]), "runs": runs,
                         "options_decides": {"EMOSamplerOptions": list(OPTIONS_DECIDED)} if named else {}}
    return {
        "about": "Which widgets of EMO Sampler and EMO Sample To Video each value of their 'preset' widget decides: "
                 "a decided widget's value is not used ('runs': what is used instead; 'model': the loaded model's "
                 "own). 'options_decides': settings of a connected options node that the preset decides too. "
                 "Written from nodes/sampler.py by `python tests/test_presets_table.py`; checked against the "
                 "engine by that test.",
        "nodes": ["EMOSampler", "EMOSampleToVideo"],
        "preset_widget": "preset",
        "presets": presets,
    }


class EMOSampler:
    DESCRIPTION = ("Generates the talking-head frames. Hallo/EMO models make long audio of clips that continue from "
                   "the last frames of the previous clip; MEMO models keep a memory of every clip so far; EchoMimic "
                   "models denoise the whole video at once in overlapping windows. The progress bar counts every "
                   "step of every clip (or window). The preset decides which of steps, cfg and scheduler are used "
                   "(model default, the shipped workflows' choice: the model's own steps and cfg, whatever the "
                   "widgets say); after a run the node shows what ran.")
    CATEGORY = "EMO"
    FUNCTION = "sample"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("frames",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL", {"tooltip": "From Load EMO Model."}),
                "reference": ("EMO_REFERENCE", {"tooltip": "From EMO ReferenceNet Encode: the prepared portrait."}),
                "audio": ("EMO_AUDIO", {"tooltip": "From EMO Encode Audio: one video frame per audio frame."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "The noise seed: the same seed and settings give the same video."}),
                "steps": ("INT", {"default": 40, "min": 1, "max": 200, "tooltip": widget_tooltip("steps")}),
                "cfg": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 20.0, "step": 0.1,
                                  "tooltip": widget_tooltip("cfg")}),
                "preset": (PRESET_CHOICES, {"default": MODEL_DEFAULT, "tooltip": PRESET_TOOLTIP}),
                "scheduler": ([AUTO, *SCHEDULERS], {"default": AUTO, "tooltip": widget_tooltip("scheduler")}),
            },
            "optional": {
                "options": (OPTIONS, {
                    "tooltip": "Optional: EMO Sampler Options (clip length, motion frames, decode chunk, guidance "
                               "interval, DeepCache, region weights) and/or EMO Family Options (EMO head speed, "
                               "EchoMimic overlap, MEMO emotion). Without it: the model's own."}),
                "poses": (POSES, {
                    "tooltip": "EchoMimic v2 (needed there): the hand poses from EMO Load Poses, made as long as the "
                               "audio as its pose_extension says. Other models ignore them."}),
                "face_keypoints": (FACE_KEYPOINTS, FACE_KEYPOINTS_INPUT),
                "emotions": (EMOTIONS, EMOTIONS_INPUT),
            },
        }

    @relays_warnings
    def sample(self, model, reference, audio, seed, steps, cfg, preset, scheduler, options=None, poses=None,
               face_keypoints=None, emotions=None):
        size = model.pipeline.config.sample_size
        check_image_fits(audio.num_frames, size, size)
        frames = torch.empty(audio.num_frames, size, size, 3)
        done = 0
        ran = []
        for clip in iter_frames(model, reference, audio, seed, steps, cfg, preset, scheduler, options,
                                told=lambda used: ran.append(ran_text(used, preset)), poses=poses,
                                face_keypoints=face_keypoints, emotions=emotions):
            frames[done: done + len(clip)] = clip
            done += len(clip)
        logging.info("EMO Sampler: %s", ran[0])
        return {"ui": {"text": ran}, "result": (frames,)}


def check_image_fits(num_frames: int, height: int, width: int) -> None:
    """Refuse, before any sampling, a video whose IMAGE batch (float32, as ComfyUI holds it) would not fit
    in the RAM that is free now, naming the node that streams instead."""
    needed = num_frames * height * width * 3 * 4
    free = available_ram()
    if free is not None and needed > 0.8 * free:
        raise ValueError(
            f"EMO Sampler: {num_frames} frames at {width}×{height} need {needed / 2**30:.1f} GiB of RAM as an IMAGE "
            f"batch, and {free / 2**30:.1f} GiB is free. For long audio use EMO Sample To Video, which writes each "
            "clip into the MP4 as it is made (memory stays flat at any length).")


def available_ram() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available


def emotion_folders() -> list[str]:
    """Where emotion2vec+ and MEMO's classifier are looked for: models/emo (and a MEMO download in it)."""
    return list(folder_paths.get_folder_paths(FOLDER))


def emotion_cancel_point(done: int, total: int) -> None:
    mm.throw_exception_if_processing_interrupted()


def sampling_options(config, seed: int, steps: int, cfg: float, preset: str, scheduler: str,
                     options: dict | None = None, plan=None) -> SamplingOptions:
    """What EMO Sampler's widgets and options run on a model of `config`, every field resolved (the preset's
    and the model's own filled in). PRESET_DECIDES says which widgets each preset leaves unused."""
    windows = config.spec.sampling == "context_windows"
    s = settings(options)
    if preset not in PRESET_CHOICES:
        raise ValueError(f"EMO Sampler: unknown preset {preset!r}; choose one of {', '.join(PRESET_CHOICES)}.")
    f = s["frames_per_clip"] or config.frames_per_clip
    n = config.motion_frames if s["motion_frames"] is None or windows else s["motion_frames"]
    own = dict(preset=None, scheduler=None if scheduler == AUTO else scheduler,
               guidance_interval=(0.0, s["guidance_end"]), cache_interval=1 if windows else s["cache_interval"])
    if preset == CUSTOM:
        knobs = dict(own, steps=steps, guidance_scale=cfg)
    elif preset == MODEL_DEFAULT:
        knobs = dict(own, steps=None, guidance_scale=None)
    else:
        knobs = dict(preset=preset, guidance_scale=None)
    decode_chunk = s["decode_chunk"]
    return resolve_options(SamplingOptions(
        seed=seed, frames_per_clip=f, motion_frames=n, context_overlap=s["context_overlap"],
        region_weights=(s["pose_weight"], s["face_weight"], s["lip_weight"]),
        # memory_mode auto may have found that only a smaller VAE decode chunk fits
        decode_chunk_size=min(decode_chunk, plan.decode_chunk) if plan is not None else decode_chunk,
        head_speed=s["head_speed"] if config.has_speed_layers else None,
        emotion=None if s["emotion"] == AUTO_EMOTION else s["emotion"], **knobs), config)


def ran_text(options: SamplingOptions, preset: str) -> str:
    """What the node shows after a run: the steps, cfg and scheduler that were used, and who chose them."""
    decided = PRESET_DECIDES[preset]
    chosen_by = f" (preset {preset} decided {', '.join(decided)})" if decided else " (preset custom: the widgets)"
    return f"Ran {options.steps} steps, cfg {options.guidance_scale:g}, scheduler {options.scheduler}{chosen_by}."


def iter_frames(model, reference, audio, seed: int, steps: int, cfg: float, preset: str, scheduler: str,
                options: dict | None = None, resume=None, told=None, poses=None,
                face_keypoints=None, emotions: str | None = None) -> Iterator[torch.Tensor]:
    """The frames [f, S, S, 3] of EMO Sampler's widgets and options, clip by clip as they are decoded, with
    ComfyUI's progress bar, previews and cancel. `resume(pipeline, options)`: the render's kept progress
    (render_state.RenderState) for the loop to continue from and keep. `told(options)`: hears the resolved
    options before sampling starts (what the node shows after the run). `poses`: EMO Load Poses' sequence, made
    as long as the audio for a pose-driven model (said once; a model that needs poses refuses to run without).
    `face_keypoints`: EMO Load Face Keypoints' driving keypoints (V-Express; without them the photo's own, fix_face).
    `emotions`: MEMO's emotion per clip from EMO Detect Emotion (else the options' emotion; auto detects each clip's
    from the encoded audio)."""
    config = model.pipeline.config
    chosen_emotion = settings(options)["emotion"]
    options = sampling_options(config, seed, steps, cfg, preset, scheduler, options, getattr(model, "plan", None))
    if uses_emotion(config):
        clips = -(-audio.num_frames // options.frames_per_clip)
        choice = chosen_emotion
        if emotions is not None:
            choice = list(emotions)
            if len(choice) != clips:
                raise ValueError(f"EMO Sampler: {len(choice)} emotions from EMO Detect Emotion for a video of {clips} "
                                 "clips: detect them from this audio, with this model's clip length.")
        # the audio as EMO Encode Audio kept it (16 kHz; each segment is layer-normed, so its scaling does not count)
        options.emotion, said = emotions_for_render(config, choice, audio.speech, 16000, audio.num_frames,
                                                    options.frames_per_clip, emotion_folders(),
                                                    str(mm.get_torch_device()), on_segment=emotion_cancel_point)
        if said.startswith("MEMO: emotion 'auto' needs"):
            warnings.warn(said)
        elif said:
            logging.info("EMO Sampler: %s", said)
    elif emotions:
        warnings.warn(f"{config.spec.title} models take no emotion: the emotions connected are ignored.")
    if uses_face_keypoints(config):
        driving = face_keypoints.sequence if face_keypoints is not None else None
        strategy = face_keypoints.retarget if face_keypoints is not None else "fix_face"
        options.poses, said = keypoints_for_render(config, reference.image, audio.num_frames, face_analyzer(),
                                                   audio.fps, strategy, driving)
        logging.info("EMO Sampler: %s", said)
    else:
        if face_keypoints is not None:
            warnings.warn(f"{config.spec.title} models draw no face keypoints: the face_keypoints connected are "
                          "ignored (V-Express reads them).")
        # checked now, not when the first frame is asked for: a render refused for want of poses writes nothing
        options.poses, said = poses_for_render(config, poses, audio.num_frames, extension_of(poses), audio.fps)
        if said:  # once per run: the extension (or that the poses are ignored), in the graph and the log
            warnings.warn(said)
    if told is not None:
        told(options)
    return _frames(model, reference, audio, options, resume)


def _frames(model, reference, audio, options: SamplingOptions, resume=None) -> Iterator[torch.Tensor]:
    # wav2vec is not needed while sampling: only the network and the VAE are brought to the device
    pipeline = model.load("net", "vae", memory_required=memory_required(model.pipeline, options))
    if resume is not None:
        options.checkpoint = resume(pipeline, options)
    total_clips = -(-audio.num_frames // options.frames_per_clip)
    bar = comfy.utils.ProgressBar(total_clips * options.steps)  # on_step gives the exact total
    previewer = step_previewer(pipeline)
    latest = {}

    def on_step(info):
        preview = None
        if previewer is not None and "x0" in latest:
            preview = previewer(latest["x0"][:, :, 0])
        bar.update_absolute(info.step, info.total_steps, preview)  # also ComfyUI's cancel point

    def on_preview(x0):
        latest["x0"] = x0

    options.callbacks = Callbacks(on_step=on_step, is_cancelled=mm.processing_interrupted,
                                  on_preview=on_preview if previewer is not None else None)
    try:
        yield from pipeline.iter_clips(reference, audio, options)
    except GenerationCancelled:
        mm.throw_exception_if_processing_interrupted()
        raise
