"""EMO Detect Emotion: MEMO's emotion of each clip, detected from the voice as its own pipeline does, as text to read
and edit before the sampler takes it (its emotions input)."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.audio.encoder import frame_count
from ..emo_pipeline.audio.emotion import emotion_files
from ..emo_pipeline.emotion_input import detector_for, missing_detector_notice, uses_emotion
from ..emo_pipeline.families import EMOTIONS as EMOTION_NAMES
from ..emo_pipeline.families import parse_emotions
from .model_loader import FOLDER
from .notify import relays_warnings


EMOTIONS = "EMO_EMOTIONS"  # what flows to the samplers' emotions input: one label per clip (a list of names)


def with_changes(labels: list[str], changes: str) -> list[str]:
    """`changes`: 'N:label' entries (clip N from 1) replacing those clips' labels, separated by commas or spaces; or
    a whole list of one label per clip."""
    changes = changes.strip()
    if not changes:
        return labels
    if ":" not in changes:
        whole = parse_emotions(changes, len(labels))
        return [whole] * len(labels) if isinstance(whole, str) else whole
    out = list(labels)
    for entry in changes.replace(",", " ").split():
        clip, _, label = entry.partition(":")
        if not clip.isdigit() or not 1 <= int(clip) <= len(out) or label not in EMOTION_NAMES:
            raise ValueError(f"EMO Detect Emotion: change {entry!r} is not 'clip:label' with a clip from 1 to "
                             f"{len(out)} and one of {', '.join(EMOTION_NAMES)} (e.g. '3:angry, 7:sad').")
        out[int(clip) - 1] = label
    return out


class EMODetectEmotion:
    DESCRIPTION = ("MEMO's emotion for each clip of the video, detected from the whole sound (not only the separated "
                   "voice) by emotion2vec+ and MEMO's classifier, as MEMO's own pipeline does; shown per clip with its "
                   "time span. 'changes' replaces any clip's label (e.g. '3:angry'). Connect emotions to the sampler's "
                   "emotions input.")
    CATEGORY = "EMO"
    FUNCTION = "detect"
    OUTPUT_NODE = True
    RETURN_TYPES = (EMOTIONS, "STRING")
    RETURN_NAMES = ("emotions", "text")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL", {"tooltip": "From Load EMO Model: a MEMO model (its frame rate and clip length)."}),
                "audio": ("AUDIO", {"tooltip": "The song or speech as loaded (before any vocal separation)."}),
                "changes": ("STRING", {"default": "", "tooltip": "Your changes to the detected labels: 'clip:label' "
                            "entries (clips from 1, as listed on the node), e.g. '3:angry, 7:sad'; or one label per "
                            "clip for all of them. Empty: the detection as it is."}),
            },
        }

    @relays_warnings
    def detect(self, model, audio, changes: str = ""):
        config = model.pipeline.config
        if not uses_emotion(config):
            raise ValueError(f"EMO Detect Emotion: {config.spec.title} models take no emotion; MEMO models do.")
        files = emotion_files(folder_paths.get_folder_paths(FOLDER))
        if files is None:
            raise FileNotFoundError(missing_detector_notice(folder_paths.get_folder_paths(FOLDER)[0])
                                    .replace("the video is rendered 'neutral'", "nothing can be detected"))
        waveform, rate = audio["waveform"], int(audio["sample_rate"])
        wave = waveform[0] if waveform.ndim == 3 else waveform
        clip = config.frames_per_clip
        frames = frame_count(wave.shape[-1], rate, config.fps)
        bar = comfy.utils.ProgressBar(1)

        def on_segment(done: int, total: int) -> None:  # progress, and Cancel stops between segments
            mm.throw_exception_if_processing_interrupted()
            bar.update_absolute(done, total)

        detector = detector_for(files[0], files[1], str(mm.get_torch_device()))
        detected = detector.clips(wave, rate, frames, clip, on_segment)
        labels = with_changes(detected, changes)
        seconds = clip / config.fps
        table = [f"clip {i + 1} ({i * seconds:.2f}-{(i + 1) * seconds:.2f} s): {label}"
                 + ("" if label == found else f" (detected: {found})")
                 for i, (label, found) in enumerate(zip(labels, detected))]
        text = ", ".join(labels)
        return {"ui": {"text": [text, *table]}, "result": (labels, text)}
