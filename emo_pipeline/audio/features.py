"""The audio of one video as the sampling loops read it: per-frame features and the frame count."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AudioFeatures:
    """Per-frame audio features of one audio clip."""

    speech: torch.Tensor  # 16 kHz speech (normalised for wav2vec), kept to re-encode for another clip length
    # wav2vec: [T_padded, layers, dim] per video frame, zero-padded audio up to a whole number of clips;
    # whisper: [T50, layers, dim] at 50 Hz (audio.whisper.frame_tokens takes each frame's tokens)
    # wav2vec2's last layer at two tokens a frame: [2·num_frames, dim] (audio.token_windows.frame_windows takes
    # each frame's ten)
    features: torch.Tensor
    num_frames: int  # video frames the audio lasts: ceil(seconds · fps)
    fps: float
    clip_length: int

    @property
    def duration(self) -> float:
        return self.speech.numel() / 16000
