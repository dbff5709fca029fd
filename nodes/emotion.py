"""EMO Detect Emotion: MEMO's emotion of each clip, detected from the voice as its own pipeline does, as text to read
and edit before the sampler takes it (its emotions input)."""

from __future__ import annotations

import comfy.model_management as mm
import comfy.utils
import folder_paths

from ..emo_pipeline.audio.encoder import frame_count
from ..emo_pipeline.audio.emotion import emotion_files
from ..emo_pipeline.emotion_input import detector_for, missing_detector_notice, uses_emotion
from .model_loader import FOLDER
from .notify import relays_warnings


class EMODetectEmotion:
    DESCRIPTION = ("MEMO's emotion for each clip of the video, detected from the whole sound (not only the separated "
                   "voice) by emotion2vec+ and MEMO's classifier, as MEMO's own pipeline does. The text lists one "
                   "emotion per clip: edit any of them, then connect it to the sampler's emotions input.")
    CATEGORY = "EMO"
    FUNCTION = "detect"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("emotions",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL", {"tooltip": "From Load EMO Model: a MEMO model (its frame rate and clip length)."}),
                "audio": ("AUDIO", {"tooltip": "The song or speech as loaded (before any vocal separation)."}),
            },
        }

    @relays_warnings
    def detect(self, model, audio):
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
        labels = detector.clips(wave, rate, frames, clip, on_segment)
        seconds = clip / config.fps
        table = [f"clip {i + 1} ({i * seconds:.2f}-{(i + 1) * seconds:.2f} s): {label}" for i, label in enumerate(labels)]
        text = ", ".join(labels)
        return {"ui": {"text": [text, *table]}, "result": (text,)}
