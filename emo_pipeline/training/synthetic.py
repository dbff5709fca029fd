"""A synthetic talking-face set: drawn faces whose mouths open with the loudness of a speech-like
sound, whose heads turn at a known speed, and who blink. Deterministic from a seed.

Each clip is an MP4 (H.264 + AAC, through PyAV) with a JSON sidecar of per-frame labels: mouth
opening, head yaw and yaw speed (radians per frame), blink, and the face box. The same dataset
code reads these and real footage; the labels let tests and evaluation measure lip sync.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..io.media import VideoWriter
from ..io.safe_files import write_atomic

SAMPLE_RATE = 16000


@dataclass
class Look:
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    background: tuple[float, float, float]
    background2: tuple[float, float, float]
    eye_gap: float
    face_width: float
    face_height: float
    center_x: float
    center_y: float


def random_look(gen: torch.Generator) -> Look:
    def pick(low: float, high: float) -> float:
        return float(low + (high - low) * torch.rand((), generator=gen))

    skins = [(0.96, 0.80, 0.68), (0.87, 0.68, 0.52), (0.72, 0.52, 0.38), (0.52, 0.36, 0.25), (0.36, 0.24, 0.17)]
    hairs = [(0.12, 0.08, 0.05), (0.35, 0.22, 0.10), (0.75, 0.60, 0.30), (0.55, 0.15, 0.08), (0.85, 0.85, 0.85)]
    skin = skins[int(torch.randint(len(skins), (), generator=gen))]
    hair = hairs[int(torch.randint(len(hairs), (), generator=gen))]
    background = tuple(pick(0.1, 0.9) for _ in range(3))
    background2 = tuple(min(1.0, max(0.0, c + pick(-0.25, 0.25))) for c in background)
    return Look(skin, hair, background, background2, eye_gap=pick(0.17, 0.23), face_width=pick(0.42, 0.52),
                face_height=pick(0.58, 0.68), center_x=pick(-0.06, 0.06), center_y=pick(-0.02, 0.08))


def speech_sound(seconds: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A voiced, syllabic signal [T] and its loudness envelope [T] in 0..1 (the mouth follows it)."""
    n = int(seconds * SAMPLE_RATE)
    t = torch.arange(n) / SAMPLE_RATE
    envelope = torch.zeros(n)
    pos = 0.0
    while pos < seconds:  # syllables of random length and strength, with pauses between words
        length = 0.12 + 0.18 * float(torch.rand((), generator=gen))
        strength = 0.4 + 0.6 * float(torch.rand((), generator=gen))
        a, b = int(pos * SAMPLE_RATE), min(n, int((pos + length) * SAMPLE_RATE))
        if b > a:
            envelope[a:b] = strength * torch.sin(torch.linspace(0, math.pi, b - a))
        pos += length + (0.25 + 0.3 * float(torch.rand((), generator=gen)) if torch.rand((), generator=gen) < 0.25
                         else 0.03)
    pitch = 110 + 60 * float(torch.rand((), generator=gen)) + 15 * torch.sin(2 * math.pi * 0.8 * t)
    phase = 2 * math.pi * torch.cumsum(pitch, 0) / SAMPLE_RATE
    voice = sum(torch.sin(k * phase) / k for k in range(1, 7))
    noise = 0.02 * torch.randn(n, generator=gen)
    return (0.3 * envelope * voice + noise * envelope).clamp(-1, 1), envelope


def frame_loudness(envelope: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
    """Mean envelope over each video frame's samples, [num_frames]."""
    per_frame = SAMPLE_RATE / fps
    out = torch.zeros(num_frames)
    for i in range(num_frames):
        seg = envelope[int(i * per_frame): max(int((i + 1) * per_frame), int(i * per_frame) + 1)]
        out[i] = seg.mean() if seg.numel() else 0.0
    return out


def draw_face(size: int, look: Look, mouth_open: float, yaw: float, blink: float) -> torch.Tensor:
    """One frame [size, size, 3] in 0..1. yaw (radians) moves the features across the face."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    grad = ((y + 1) / 2)[..., None]
    image = torch.tensor(look.background) * (1 - grad) + torch.tensor(look.background2) * grad
    cx = look.center_x + 0.25 * math.sin(yaw)
    cy = look.center_y
    fw, fh = look.face_width * (1 - 0.15 * abs(math.sin(yaw))), look.face_height

    def paint(mask: torch.Tensor, rgb: tuple[float, float, float]) -> None:
        image[mask] = torch.tensor(rgb)

    paint((((x - cx) / (fw * 1.12)) ** 2 + ((y - cy + 0.1) / (fh * 1.05)) ** 2) < 1, look.hair)
    paint((((x - cx) / fw) ** 2 + ((y - cy) / fh) ** 2) < 1, look.skin)
    feature_x = cx + 0.6 * fw * math.sin(yaw)  # features slide towards the side the head turns to
    eye_h = 0.05 * max(0.08, 1.0 - blink)
    for side in (-1, 1):
        ex = feature_x + side * look.eye_gap
        paint((((x - ex) / 0.085) ** 2 + ((y - cy + 0.13) / eye_h) ** 2) < 1, (0.97, 0.97, 0.97))
        if blink < 0.7:
            paint((((x - ex) / 0.035) ** 2 + ((y - cy + 0.13) / min(0.035, eye_h)) ** 2) < 1, (0.1, 0.07, 0.05))
    nose = ((x - feature_x) / 0.03) ** 2 + ((y - cy - 0.05) / 0.08) ** 2 < 1
    image[nose] = image[nose] * 0.85
    mouth_h = 0.015 + 0.11 * mouth_open
    paint((((x - feature_x) / 0.15) ** 2 + ((y - cy - 0.33) / mouth_h) ** 2) < 1, (0.55, 0.12, 0.15))
    if mouth_open > 0.25:  # the dark inside shows when it opens
        paint((((x - feature_x) / 0.11) ** 2 + ((y - cy - 0.33) / (0.8 * mouth_h - 0.01)) ** 2) < 1, (0.15, 0.03, 0.05))
    return image.clamp(0, 1)


@dataclass
class ClipLabels:
    fps: float
    mouth_open: list[float]
    yaw: list[float]
    speed: list[float]  # yaw change per frame (radians), EMO's head-speed label
    blink: list[float]
    face_box: list[float]  # x0, y0, x1, y1 fractions, the union over the clip


def make_clip(path: str | Path, seed: int, seconds: float = 4.0, size: int = 64, fps: float = 25.0,
              head_speed: float | None = None) -> ClipLabels:
    """Write one talking-face MP4 and its labels (`<path>.json`)."""
    gen = torch.Generator().manual_seed(seed)
    look = random_look(gen)
    sound, envelope = speech_sound(seconds, gen)
    frames = math.ceil(seconds * fps)
    loud = frame_loudness(envelope, frames, fps)
    mouth = (loud / loud.max().clamp(min=1e-6)).clamp(0, 1)
    speed = head_speed if head_speed is not None else 0.01 + 0.04 * float(torch.rand((), generator=gen))
    period = 1.5 + 2.0 * float(torch.rand((), generator=gen))
    # yaw oscillates with an amplitude set so that its peak speed is `speed` radians per frame
    amplitude = min(0.6, speed * fps * period / (2 * math.pi))
    phase0 = 2 * math.pi * float(torch.rand((), generator=gen))
    yaw = [amplitude * math.sin(2 * math.pi * i / (fps * period) + phase0) for i in range(frames)]
    blink = torch.zeros(frames)
    i = int(torch.randint(10, 40, (), generator=gen))
    while i < frames:
        for k, v in enumerate((0.5, 1.0, 0.5)):
            if i + k < frames:
                blink[i + k] = v
        i += int(torch.randint(40, 90, (), generator=gen))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(path, fps, size, size, audio=(sound[None], SAMPLE_RATE), crf=12) as writer:
        for start in range(0, frames, 25):
            chunk = [draw_face(size, look, float(mouth[j]), yaw[j], float(blink[j]))
                     for j in range(start, min(frames, start + 25))]
            writer.write(torch.stack(chunk))
    half_w = look.face_width * 1.12
    box = [max(0.0, (look.center_x - 0.25 * amplitude - half_w + 1) / 2), max(0.0, (look.center_y - 0.1 - look.face_height * 1.05 + 1) / 2),
           min(1.0, (look.center_x + 0.25 * amplitude + half_w + 1) / 2), min(1.0, (look.center_y + look.face_height + 1) / 2)]
    labels = ClipLabels(fps, mouth.tolist(), yaw, [0.0] + [yaw[j] - yaw[j - 1] for j in range(1, frames)],
                        blink.tolist(), box)
    write_atomic(path.with_suffix(".json"), json.dumps(asdict(labels)).encode())
    return labels


def make_dataset(folder: str | Path, count: int, seed: int = 0, **kwargs) -> list[Path]:
    """`count` clips named clip_00000.mp4 ... in `folder`, reproducible from `seed`."""
    folder = Path(folder)
    paths = []
    for i in range(count):
        path = folder / f"clip_{i:05d}.mp4"
        make_clip(path, seed * 100003 + i, **kwargs)
        paths.append(path)
    return paths


def _face_part(frames: torch.Tensor, face_box: list[float], xs: tuple[float, float],
               ys: tuple[float, float]) -> torch.Tensor:
    """The part of each frame [F, H, W, 3] between the given fractions of the face box."""
    _, h, w, _ = frames.shape
    x0, y0, x1, y1 = face_box
    bw, bh = x1 - x0, y1 - y0
    return frames[:, int((y0 + ys[0] * bh) * h): int((y0 + ys[1] * bh) * h),
                  int((x0 + xs[0] * bw) * w): int((x0 + xs[1] * bw) * w)].float()


def _skin(part: torch.Tensor) -> torch.Tensor:
    """The skin colour of each frame, [F, 1, 1, 3]: the median colour of a part that is mostly skin."""
    return part.flatten(1, 2).median(1).values[:, None, None]


def mouth_opening(frames: torch.Tensor, face_box: list[float] | None = None) -> torch.Tensor:
    """Measured from pixels [F, H, W, 3] in 0..1, per frame [F]: how much of the lower face is lip
    or mouth. Skin-relative, so it holds for every skin tone and for blurred output: the skin is
    the region's median colour, the face spans each row between its outermost skin pixels (the
    background beside the chin is left out), and a pixel counts by how far its green/red ratio
    falls from the skin's towards the lips' (about 0.2). Used to check lip sync on generated video."""
    region = _face_part(frames, face_box or [0.0, 0.0, 1.0, 1.0], (0.15, 0.85), (0.62, 0.95))
    skin = _skin(region)
    is_skin = (region - skin).abs().amax(-1) < 0.1
    cols = torch.arange(region.shape[2])
    left = torch.where(is_skin, cols, region.shape[2]).amin(-1, keepdim=True)
    right = torch.where(is_skin, cols, -1).amax(-1, keepdim=True)
    inside = (cols >= left) & (cols <= right)
    ratio = region[..., 1] / region[..., 0].clamp(min=0.05)
    skin_ratio = skin[..., 1] / skin[..., 0].clamp(min=0.05)
    lipness = ((skin_ratio - ratio) / (skin_ratio - 0.2).clamp(min=0.1)).clamp(0, 1)
    return (lipness * inside).mean(dim=(1, 2))


def head_motion(frames: torch.Tensor, face_box: list[float], lag: int = 8) -> float:
    """Mean horizontal movement (pixels per frame) of the face over `lag` frames: the centroid of
    the pixels within 0.1 of the skin colour (the median of the face box's centre). Skin-relative,
    so it holds for every skin tone and background; measured over several frames, so it is the
    head's travel and not the frame-to-frame flicker of generated video. On the synthetic set it
    tracks the speed labels."""
    skin = _skin(_face_part(frames, face_box, (0.35, 0.65), (0.35, 0.65)))
    is_skin = ((frames - skin).abs().amax(-1) < 0.1).float()
    xs = torch.arange(frames.shape[2], dtype=torch.float32)
    centroid = (is_skin.sum(1) * xs).sum(1) / is_skin.sum((1, 2)).clamp(min=1)
    return float((centroid[lag:] - centroid[:-lag]).abs().mean() / lag)
