"""MEMO's emotion of each clip, detected from the voice as its own pipeline does (memo/utils/audio_utils.py
`extract_audio_emotion_labels`, memo/pipelines/video_pipeline.py):

* the **unseparated** audio at 16 kHz, channel 0;
* segments: the first 2 s label the first second; for every whole second i from 1 s while i < length − 1 s, the
  3 s from i − 1 s label [i, i + 1 s); the last 2 s label the last second (written last, so they win);
* each segment: layer-normed without affine, emotion2vec+'s frame features averaged over time
  (audio/emotion2vec.py), MEMO's 9-class classifier, argmax;
* the per-sample labels resized (nearest) to the padded frame count, and each 16-frame clip takes the most frequent
  of its labels (torch.mode: ties go to the smallest).

Segment by segment, so a song of any length never holds more than one 3-s segment's features.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..families import EMOTIONS
from .emotion2vec import LARGE, SAMPLE_RATE, Emotion2vec, segment_embedding

# MEMO's download keeps its classifier here (its subfolder="misc/audio_emotion_classifier")
CLASSIFIER_FOLDER = "misc/audio_emotion_classifier"
CLASSIFIER_FILE = "diffusion_pytorch_model.safetensors"
EMOTION2VEC_FOLDER = "emotion2vec_plus_large"  # emotion2vec/emotion2vec_plus_large's model.pt, in the model folder
EMOTION2VEC_FILE = "model.pt"
ENCODER_SHAPE = LARGE  # the encoder MEMO's classifier was trained on (None: any, for tiny test models)


class EmotionClassifier(nn.Module):
    """MEMO's AudioEmotionClassifierModel (memo/models/emotion_classifier.py) with its defaults: fc1 1024→2048,
    fc2…fc4 2048→2048, fc5 2048→9, ReLU between; its forward's softmax does not change the argmax, so it is
    left out."""

    def __init__(self, features: int = 1024, channels: int = 2048, layers: int = 5, classes: int = len(EMOTIONS)):
        super().__init__()
        sizes = [features] + [channels] * (layers - 1) + [classes]
        parts: list[tuple[str, nn.Module]] = []
        for i in range(layers):
            parts.append((f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1])))
            if i < layers - 1:
                parts.append((f"relu{i + 1}", nn.ReLU()))
        self.layers = nn.Sequential(OrderedDict(parts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> EmotionClassifier:
    """MEMO's classifier from its safetensors file, strictly (every key, nothing else, every shape)."""
    from safetensors.torch import load_file

    from ..io.loading import CheckpointError, compare_keys

    path = Path(path)
    if path.is_dir():
        path = path / CLASSIFIER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"MEMO's emotion classifier is not at {path}: it comes with MEMO's download "
                                f"({CLASSIFIER_FOLDER}/{CLASSIFIER_FILE}); run `python -m emo_pipeline download memo`.")
    try:
        state = load_file(str(path))
    except Exception as err:  # a damaged or cut file
        raise CheckpointError(f"Cannot read MEMO's emotion classifier {path}: {type(err).__name__}: {err}. Download "
                              "MEMO again (`python -m emo_pipeline download memo`).") from None
    layers = sum(1 for k in state if k.startswith("layers.fc") and k.endswith(".weight"))
    first = state.get("layers.fc1.weight")
    if first is None or layers < 2:
        raise CheckpointError(f"{path} is not MEMO's emotion classifier (no layers.fc1 ... fc5): download MEMO again.")
    classifier = EmotionClassifier(features=first.shape[1], channels=first.shape[0], layers=layers)
    report = compare_keys({k: v.shape for k, v in classifier.state_dict().items()},
                          {k: v.shape for k, v in state.items()})
    if not report.ok:
        raise CheckpointError(f"{path} is not MEMO's emotion classifier: {report.describe(3)}. Download MEMO again.")
    classifier.load_state_dict(state)
    return classifier.to(device).eval()


def segments(num_samples: int, rate: int = SAMPLE_RATE) -> list[tuple[int, int, int, int]]:
    """(start, end) of each segment MEMO classifies and the (start, end) of the samples its label is written to,
    in the order it writes them (a later write wins), for audio of `num_samples` samples."""
    if num_samples < 1:
        raise ValueError("The audio is empty: there is no emotion to detect.")
    second = rate
    out = [(0, min(2 * second, num_samples), 0, min(second, num_samples))]
    for i in range(second, num_samples - second, second):
        out.append((i - second, min(i + 2 * second, num_samples), i, min(i + second, num_samples)))
    out.append((max(num_samples - 2 * second, 0), num_samples, max(num_samples - second, 0), num_samples))
    return out


def frame_labels(samples: torch.Tensor, num_frames: int, label_of: Callable[[torch.Tensor], int],
                 rate: int = SAMPLE_RATE, on_segment: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Each frame's label [num_frames] (int64) from 16 kHz mono `samples`: MEMO's segments labelled by
    `label_of(segment) -> class`, written per sample, resized to the frames by nearest neighbour as its
    F.interpolate does. `on_segment(done, total)` after each segment (progress and cancel)."""
    samples = samples.reshape(-1)
    labels = torch.full((samples.numel(),), -1, dtype=torch.int32)
    parts = segments(samples.numel(), rate)
    for n, (start, end, write_start, write_end) in enumerate(parts):
        labels[write_start:write_end] = int(label_of(samples[start:end]))
        if on_segment is not None:
            on_segment(n + 1, len(parts))
    resized = F.interpolate(labels[None, None].float(), size=num_frames, mode="nearest")[0, 0]
    return resized.to(torch.int64)


def clip_labels(labels: torch.Tensor, clip_length: int) -> list[int]:
    """The label of each clip of `clip_length` frames: the most frequent of its frames' labels, ties to the smallest
    (torch.mode, as MEMO's pipeline takes it)."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be at least 1, not {clip_length}")
    return [int(torch.mode(labels[start:start + clip_length]).values) for start in range(0, len(labels), clip_length)]


class EmotionDetector:
    """emotion2vec+ large and MEMO's classifier: the emotion of each clip of a video from its audio."""

    def __init__(self, encoder: Emotion2vec, classifier: EmotionClassifier) -> None:
        self.encoder, self.classifier = encoder.eval(), classifier.eval()

    @classmethod
    def from_files(cls, emotion2vec: str | Path, classifier: str | Path,
                   device: torch.device | str = "cpu") -> "EmotionDetector":
        from .emotion2vec import load_emotion2vec

        encoder = load_emotion2vec(emotion2vec, expected=ENCODER_SHAPE, device=device)
        return cls(encoder, load_classifier(classifier, device))

    @torch.no_grad()
    def label_of(self, segment: torch.Tensor) -> int:
        feature = segment_embedding(self.encoder, segment, SAMPLE_RATE)
        param = next(self.classifier.parameters())
        return int(self.classifier(feature[None].to(param.device, param.dtype)).argmax(dim=-1)[0])

    def clips(self, waveform: torch.Tensor, sample_rate: int, num_frames: int, clip_length: int,
              on_segment: Callable[[int, int], None] | None = None) -> list[str]:
        """The emotion of each clip (names of families.EMOTIONS) of a video of `num_frames` frames (padded to whole
        clips, as MEMO pads them) from its audio, [channels, samples] or [samples] at any rate: channel 0, at 16 kHz."""
        from .resample import resample

        wave = torch.as_tensor(waveform).float()
        wave = wave[0] if wave.ndim == 2 else wave.reshape(-1)
        if sample_rate != SAMPLE_RATE:
            wave = resample(wave[None], sample_rate, SAMPLE_RATE)[0]
        padded = -(-num_frames // clip_length) * clip_length
        labels = frame_labels(wave, padded, self.label_of, SAMPLE_RATE, on_segment)
        return [EMOTIONS[label] for label in clip_labels(labels, clip_length)]


def emotion_files(folders: Sequence[str | Path]) -> tuple[Path, Path] | None:
    """(emotion2vec+ large's model.pt, MEMO's classifier) where both are found: the classifier in a MEMO download
    (memo/misc/audio_emotion_classifier/ or misc/...), emotion2vec_plus_large/ beside it; None otherwise."""
    encoder = classifier = None
    for folder in map(Path, folders):
        for base in (folder, folder / "memo", folder.parent):
            if encoder is None and (base / EMOTION2VEC_FOLDER / EMOTION2VEC_FILE).is_file():
                encoder = base / EMOTION2VEC_FOLDER / EMOTION2VEC_FILE
            if classifier is None and (base / CLASSIFIER_FOLDER / CLASSIFIER_FILE).is_file():
                classifier = base / CLASSIFIER_FOLDER / CLASSIFIER_FILE
    return (encoder, classifier) if encoder is not None and classifier is not None else None
