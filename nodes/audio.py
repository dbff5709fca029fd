"""EMO Encode Audio: core AUDIO (any rate, mono or stereo) → the model's audio features (wav2vec2 per
frame for Hallo/EMO, whisper-tiny for EchoMimic)."""

from __future__ import annotations

import comfy.model_management as mm

from .notify import relays_warnings
from .sampler_options import MODEL_DEFAULT

# Frame rates to pick from besides the model's own (Hallo 25, EchoMimic 24, MEMO 30)
FRAME_RATES = [MODEL_DEFAULT, "12", "15", "23.976", "24", "25", "29.97", "30", "48", "50", "60"]


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
                "model": ("EMO_MODEL", {"tooltip": "From Load EMO Model: its audio encoder is used."}),
                "audio": ("AUDIO", {"tooltip": "Any rate, mono or stereo (the voice: EMO Separate Vocals' output "
                                               "for songs)."}),
                "fps": (FRAME_RATES, {"default": MODEL_DEFAULT,
                        "tooltip": "Video frame rate. model default: the rate the model was trained at (Hallo 25, "
                                   "EchoMimic 24, MEMO 30)."}),
            }
        }

    @relays_warnings
    def encode(self, model, audio, fps: str):
        # AUDIO may be a dict or a lazy Mapping (VideoHelperSuite): only index it.
        waveform, sample_rate = audio["waveform"], audio["sample_rate"]
        if waveform.ndim == 3 and waveform.shape[0] > 1:
            raise ValueError(f"EMO Encode Audio got a batch of {waveform.shape[0]} audio clips; it takes one. "
                             "Split the batch and encode each clip separately.")
        mm.throw_exception_if_processing_interrupted()
        pipeline = model.load("audio")
        rate = None if fps == MODEL_DEFAULT else float(fps)
        features = pipeline.encode_audio(waveform, int(sample_rate), fps=rate)
        return (features, features.num_frames, features.fps)
