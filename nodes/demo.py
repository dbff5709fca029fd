"""EMO Demo Inputs: the built-in drawn face and synthetic voice, for trying the bundled demo model
with nothing to upload."""

from __future__ import annotations

import torch

from ..emo_pipeline.demo_inputs import SAMPLE_RATE, drawn_face_box, drawn_portrait, speech_like_audio


class EMODemoInputs:
    DESCRIPTION = ("A drawn face and a synthetic voice like those the bundled demo model was trained on. "
                   "The demo model animates faces like this one, not photographs.")
    CATEGORY = "EMO"
    FUNCTION = "make"
    RETURN_TYPES = ("IMAGE", "AUDIO", "MASK")
    RETURN_NAMES = ("portrait", "audio", "face_mask")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "seconds": ("FLOAT", {"default": 4.0, "min": 0.5, "max": 60.0, "step": 0.5,
                                  "tooltip": "Length of the synthetic voice (the video gets one frame per audio "
                                             "frame)."}),
            # declared, so that saved workflows keep its "fixed" (the frontend adds the control to any "seed")
            "seed": ("INT", {"default": 123456, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                             "tooltip": "Which drawn face and voice: each seed draws another. Keep it fixed for the "
                                        "same demo every run."}),
        }}

    def make(self, seconds: float, seed: int):
        size = 256
        image = drawn_portrait(size, seed)[None]
        audio = {"waveform": speech_like_audio(seconds, SAMPLE_RATE, seed)[None], "sample_rate": SAMPLE_RATE}
        mask = torch.zeros(1, size, size)
        x0, y0, x1, y1 = (round(max(0.0, min(1.0, v)) * size) for v in drawn_face_box(seed))
        mask[:, y0:y1, x0:x1] = 1.0
        return (image, audio, mask)
