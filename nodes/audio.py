"""EMO Encode Audio: core AUDIO (any rate, mono or stereo) → the model's audio features (wav2vec2 per
frame for Hallo/EMO, whisper-tiny for EchoMimic)."""

from __future__ import annotations

import comfy.model_management as mm

from .notify import relays_warnings


class EMOEncodeAudio:
    DESCRIPTION = "Turns audio into EMO's per-frame audio features; the video gets one frame per audio frame."
    CATEGORY = "EMO"
    FUNCTION = "encode"
    RETURN_TYPES = ("EMO_AUDIO", "INT", "FLOAT")
    RETURN_NAMES = ("emo_audio", "frame_count", "fps")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("EMO_MODEL",),
                "audio": ("AUDIO",),
                "fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 120.0, "step": 0.01,
                                  "tooltip": "Video frame rate. 0: the model's own (Hallo was trained at 25, "
                                             "EchoMimic at 24)."}),
            }
        }

    @relays_warnings
    def encode(self, model, audio, fps: float):
        # AUDIO may be a dict or a lazy Mapping (VideoHelperSuite): only index it.
        waveform, sample_rate = audio["waveform"], audio["sample_rate"]
        if waveform.ndim == 3 and waveform.shape[0] > 1:
            raise ValueError(f"EMO Encode Audio got a batch of {waveform.shape[0]} audio clips; it takes one. "
                             "Split the batch and encode each clip separately.")
        mm.throw_exception_if_processing_interrupted()
        pipeline = model.load("audio")
        features = pipeline.encode_audio(waveform, int(sample_rate), fps=fps or None)
        return (features, features.num_frames, features.fps)
