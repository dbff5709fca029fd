"""EMO Sampler Options and EMO Family Options: the settings most runs leave alone, kept off EMO Sampler.

Each node returns EMO_SAMPLER_OPTIONS, a dict of the settings it holds, merged over those of an
options node connected to its own `options` input (so the two chain in either order). A setting
missing from the dict is the model's own; "model default" in a list is that choice made explicitly."""

from __future__ import annotations

from ..emo_pipeline.families import AUTO_EMOTION, EMOTION_CHOICES

OPTIONS = "EMO_SAMPLER_OPTIONS"
MODEL_DEFAULT = "model default"

# What the sampler uses for a setting no options node gave (None: the loaded model's own).
DEFAULTS = {
    "frames_per_clip": None, "motion_frames": None, "decode_chunk": 8, "guidance_end": 1.0, "cache_interval": 1,
    "pose_weight": 1.0, "face_weight": 1.0, "lip_weight": 1.0, "head_speed": 0.0, "context_overlap": None,
    "emotion": AUTO_EMOTION,
}


def numbers_or_default(first: int, last: int) -> list[str]:
    """A list widget: "model default", then each whole number from `first` to `last`."""
    return [MODEL_DEFAULT, *(str(n) for n in range(first, last + 1))]


def chosen(value: str) -> int | None:
    """The number picked in a numbers_or_default list; None for "model default"."""
    return None if value == MODEL_DEFAULT else int(value)


def options_input() -> dict:
    return {"options": (OPTIONS, {"tooltip": "Optional: settings from another EMO Sampler Options or EMO Family "
                                             "Options node; this node's own settings are added to them."})}


class EMOSamplerOptions:
    DESCRIPTION = ("Settings of EMO Sampler and EMO Sample To Video that most runs leave alone: clip length, motion "
                   "frames, VAE decode chunk, guidance interval, DeepCache and the face-region weights. Connect "
                   "its output to the sampler's options input. Without it the sampler uses these defaults.")
    CATEGORY = "EMO"
    FUNCTION = "make"
    RETURN_TYPES = (OPTIONS,)
    RETURN_NAMES = ("options",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "frames_per_clip": (numbers_or_default(1, 30), {"default": MODEL_DEFAULT,
                                    "tooltip": "Frames made per clip. model default: 16 for Hallo and MEMO, 12 for EMO; "
                                               "for EchoMimic the context window, 12."}),
                "motion_frames": (numbers_or_default(0, 16), {"default": MODEL_DEFAULT,
                                  "tooltip": "Frames of the previous clip each clip continues from. model default: 2 "
                                             "for Hallo, 4 for EMO, 16 past frames for MEMO's memory; EchoMimic "
                                             "uses none."}),
                "decode_chunk": ("INT", {"default": DEFAULTS["decode_chunk"], "min": 1, "max": 64,
                                 "tooltip": "Frames the VAE decodes at once; lower it if memory runs out."}),
                "guidance_end": ("FLOAT", {"default": DEFAULTS["guidance_end"], "min": 0.0, "max": 1.0, "step": 0.05,
                                 "tooltip": "Share of the steps that use guidance (from the start); the later steps "
                                            "run the conditional half only. 1: every step, as Hallo. The balanced "
                                            "and fast presets set their own."}),
                "cache_interval": ("INT", {"default": DEFAULTS["cache_interval"], "min": 1, "max": 8,
                                   "tooltip": "DeepCache: a full pass every N steps; the steps between reuse its "
                                              "low-resolution features (about half the work). 1: off. Hallo/EMO "
                                              "models only; the balanced and fast presets set their own."}),
                "pose_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                "tooltip": "Hallo's region attention: how strongly the audio moves the background "
                                           "and head pose (1: as trained)."}),
                "face_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                                "tooltip": "Hallo's region attention: how strongly the audio moves the face's "
                                           "expression (1: as trained)."}),
                "lip_weight": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                               "tooltip": "Hallo's region attention: how strongly the audio moves the lips (1: as "
                                          "trained)."}),
            },
            "optional": options_input(),
        }

    def make(self, frames_per_clip: str, motion_frames: str, decode_chunk: int, guidance_end: float,
             cache_interval: int, pose_weight: float, face_weight: float, lip_weight: float, options=None):
        mine = {"frames_per_clip": chosen(frames_per_clip), "motion_frames": chosen(motion_frames),
                "decode_chunk": decode_chunk, "guidance_end": guidance_end, "cache_interval": cache_interval,
                "pose_weight": pose_weight, "face_weight": face_weight, "lip_weight": lip_weight}
        return ({**(options or {}), **mine},)


class EMOFamilyOptions:
    DESCRIPTION = ("Settings that one model family reads and the others ignore: EMO's head speed, EchoMimic's "
                   "context-window overlap, MEMO's emotion. Connect its output to the sampler's options input "
                   "(or to EMO Sampler Options' options input).")
    CATEGORY = "EMO"
    FUNCTION = "make"
    RETURN_TYPES = (OPTIONS,)
    RETURN_NAMES = ("options",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "head_speed": ("FLOAT", {"default": DEFAULTS["head_speed"], "min": -0.2, "max": 0.2, "step": 0.005,
                               "tooltip": "EMO models' speed layers: head turn per frame (radians of yaw, the sign "
                                          "is the direction; 0.05 is brisk, 0 keeps the head still). Other models "
                                          "ignore it."}),
                "context_overlap": (numbers_or_default(0, 29), {"default": MODEL_DEFAULT,
                                    "tooltip": "EchoMimic models: frames shared by neighbouring context windows "
                                               "(model default: 3). Other models ignore it."}),
                "emotion": (list(EMOTION_CHOICES), {"default": DEFAULTS["emotion"],
                            "tooltip": "MEMO models: the emotion its audio modules express. auto: each clip's, "
                                       "detected from the voice as MEMO's own pipeline does (emotion2vec+ and MEMO's "
                                       "classifier: 'download: emotion2vec' once; without them neutral, said once); "
                                       "a label: that emotion for the whole video. Per clip: EMO Detect Emotion into "
                                       "the sampler's emotions input. Other models ignore it."}),
            },
            "optional": options_input(),
        }

    def make(self, head_speed: float, context_overlap: str, emotion: str, options=None):
        mine = {"head_speed": head_speed, "context_overlap": chosen(context_overlap), "emotion": emotion}
        return ({**(options or {}), **mine},)


def settings(options: dict | None) -> dict:
    """Every setting the sampler reads: the options given, the defaults for the rest."""
    unknown = set(options or {}) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"EMO Sampler: unknown options {sorted(unknown)}; connect EMO Sampler Options or EMO Family "
                         "Options to the options input.")
    return {**DEFAULTS, **(options or {})}
