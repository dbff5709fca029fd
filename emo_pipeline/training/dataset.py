"""Training samples from a folder of ordinary video files with sound (MP4 and the like, read with
PyAV): reference frame, clip frames, motion frames, per-frame audio features, face region and
head-speed labels. Synthetic clips and real footage go through the same code.

Labels come from a `<video>.json` sidecar when there is one (the synthetic set writes it): face
box and per-frame yaw speed. Otherwise the face box is found with the face analyzer on a few
frames (their union) and the speed is estimated from the five landmarks' nose offset (SCRFD), or
left at zero with the built-in detector, which has no landmarks.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
import torch.nn.functional as F

from ..audio.encoder import AudioEncoder
from ..audio.resample import prepare_speech
from ..config import EMOConfig
from ..io.media import load_audio
from ..models.frame_windows import frame_windows

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class Video:
    path: Path
    frames: torch.Tensor  # [T, S, S, 3] uint8, centre square, resized to the model's size
    features: torch.Tensor  # [T, layers, dim] wav2vec features, one per video frame
    face_box: tuple[float, float, float, float]
    speed: torch.Tensor  # [T] yaw change per frame, radians
    fps: float


def read_frames(path: Path, size: int) -> tuple[torch.Tensor, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path.name} has no video frames.")
    x = torch.stack(frames)
    h, w = x.shape[1:3]
    s = min(h, w)
    x = x[:, (h - s) // 2: (h - s) // 2 + s, (w - s) // 2: (w - s) // 2 + s]
    if s != size:
        x = F.interpolate(x.permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.contiguous(), fps


def _labels(path: Path, frames: torch.Tensor, analyzer) -> tuple[tuple[float, ...], torch.Tensor]:
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        labels = json.loads(sidecar.read_text())
        return tuple(labels["face_box"]), torch.tensor(labels["speed"], dtype=torch.float32)[: len(frames)]
    from ..face import FaceAnalyzer

    analyzer = analyzer or FaceAnalyzer([])
    size = frames.shape[1]
    boxes, yaws = [], []
    for i in range(0, len(frames), max(1, len(frames) // 8)):
        faces = analyzer.faces(frames[i].numpy())
        if faces:
            boxes.append(faces[0].box)
            if faces[0].landmarks is not None:
                eyes = faces[0].landmarks[:2]
                nose = faces[0].landmarks[2]
                offset = (nose[0] - eyes[:, 0].mean()) / max(1e-3, abs(eyes[1, 0] - eyes[0, 0]))
                yaws.append((i, math.asin(max(-1.0, min(1.0, 2 * offset)))))
    box = (0.0, 0.0, 1.0, 1.0)
    if boxes:
        b = np.array(boxes)
        box = tuple(float(v) / size for v in (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()))
    speed = torch.zeros(len(frames))
    if len(yaws) > 1:
        index, value = zip(*yaws)
        yaw = np.interp(np.arange(len(frames)), index, value)
        speed[1:] = torch.from_numpy(np.diff(yaw)).float()
    return box, speed


def load_video(path: Path, config: EMOConfig, encoder: AudioEncoder, analyzer=None) -> Video:
    frames, fps = read_frames(path, config.sample_size)
    waveform, rate = load_audio(path)
    speech = encoder.prepare(prepare_speech(waveform, rate, config.audio_sample_rate))  # as its feature extractor
    features = encoder(speech, len(frames))
    box, speed = _labels(path, frames, analyzer)
    return Video(path, frames, features, box, speed, fps)


def _pixels(frames: torch.Tensor) -> torch.Tensor:
    return frames.permute(0, 3, 1, 2).float() / 127.5 - 1


class TalkingFaceDataset(torch.utils.data.Dataset):
    """Stage 1 samples are single frames; stages 2 and 3 are n + f contiguous frames (n motion
    frames then the clip). Each index is one window position in one video; the reference frame is
    drawn at random from the same video (seeded by the index, so epochs are reproducible)."""

    def __init__(self, folder: str | Path, config: EMOConfig, encoder: AudioEncoder, stage: int,
                 frames_per_clip: int | None = None, motion_frames: int | None = None, analyzer=None) -> None:
        self.config, self.stage = config, stage
        self.f = 1 if stage == 1 else (frames_per_clip or config.frames_per_clip)
        self.n = 0 if stage == 1 else (config.motion_frames if motion_frames is None else motion_frames)
        paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not paths:
            raise FileNotFoundError(f"No video files in {folder} ({', '.join(VIDEO_SUFFIXES)}).")
        self.videos = [load_video(p, config, encoder, analyzer) for p in paths]
        self.index = [(v, s) for v, video in enumerate(self.videos)
                      for s in range(0, len(video.frames) - self.n - self.f + 1)]
        if not self.index:
            raise ValueError(f"The videos are shorter than {self.n + self.f} frames.")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, start = self.index[i]
        video = self.videos[v]
        gen = torch.Generator().manual_seed(i)
        ref = int(torch.randint(len(video.frames), (), generator=gen))
        clip = slice(start + self.n, start + self.n + self.f)
        x0, y0, x1, y1 = video.face_box
        size = self.config.sample_size
        region = torch.zeros(3, size, size)
        region[:, round(y0 * size): round(y1 * size), round(x0 * size): round(x1 * size)] = 1.0
        return {
            "reference": _pixels(video.frames[ref: ref + 1])[0],
            "motion": _pixels(video.frames[start: start + self.n]),
            "target": _pixels(video.frames[clip]),
            "audio": frame_windows(video.features[None], self.config.audio_context, clip.start, clip.stop)[0],
            "face_region": region,
            "face_box": torch.tensor(video.face_box, dtype=torch.float32),
            "speed": video.speed[clip],
        }
