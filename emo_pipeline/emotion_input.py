"""MEMO's emotion for a render, for the nodes and the command line: "auto" detects each clip's from the audio as
MEMO's own pipeline does (audio/emotion.py: emotion2vec+ large and MEMO's classifier, on the unseparated sound), a
label holds for the whole video, and a per-clip list (edited from a detection) is taken as it is."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from .families import AUTO_EMOTION as AUTO
from .families import EMOTION_CHOICES, parse_emotions  # noqa: F401  (the nodes and the command line read them here)
from .io.advice import where

if TYPE_CHECKING:
    from .audio.emotion import EmotionDetector
    from .config import EMOConfig


def uses_emotion(config: "EMOConfig") -> bool:
    """Whether the model's audio modules read an emotion label (MEMO)."""
    return config.spec.audio_route == "joint_audio"


def missing_detector_notice(folder: str | Path) -> str:
    return ("MEMO: emotion 'auto' needs emotion2vec+ large and MEMO's emotion classifier, which are not there: the "
            "video is rendered 'neutral'. Fix: " + where(
                "run 'download: emotion2vec' in Load EMO Model (or MEMO's download again: it brings both)",
                f"python -m emo_pipeline download emotion2vec --to {folder}"))


@lru_cache(maxsize=2)
def detector_for(encoder: Path, classifier: Path, device: str = "cpu") -> "EmotionDetector":
    """One detector per pair of files and device, kept between renders (its 0.66 GB load is not repeated)."""
    from .audio.emotion import EmotionDetector

    return EmotionDetector.from_files(encoder, classifier, device)


def emotions_for_render(config: "EMOConfig", choice: str | Sequence[str] | None, waveform: torch.Tensor,
                        sample_rate: int, num_frames: int, clip_length: int, folders: Sequence[str | Path],
                        device: str = "cpu", on_segment: Callable[[int, int], None] | None = None,
                        ) -> tuple[str | list[str] | None, str]:
    """(the emotion the sampler takes, the line to say). For MEMO: `choice` "auto" (or None, its default) detects
    each clip's emotion from `waveform` (the unseparated sound) when the detector's files are in `folders`, else
    'neutral' with a notice; a label or a per-clip list is taken as given. Other models: None, and a line when an
    emotion other than the default was asked for."""
    from .audio.emotion import emotion_files

    if not uses_emotion(config):
        asked = choice not in (None, AUTO, "neutral")
        return None, (f"{config.spec.title} models take no emotion: the emotion given is ignored." if asked else "")
    clips = -(-num_frames // clip_length)
    if choice is not None and choice != AUTO:
        if isinstance(choice, str):
            return choice, f"emotion: {choice} for the whole video"
        if len(choice) != clips:
            raise ValueError(f"{len(choice)} emotions were given for a video of {clips} clips: give one per clip.")
        return list(choice), "emotion per clip (given): " + " ".join(choice)
    files = emotion_files(folders)
    if files is None:
        return "neutral", missing_detector_notice(Path(folders[0]) if folders else ".")
    labels = detector_for(files[0], files[1], device).clips(waveform, sample_rate, num_frames, clip_length, on_segment)
    return labels, "emotion per clip (detected): " + " ".join(labels)
