"""Built-in inputs for `generate` when no portrait or audio is given: a drawn face and a
speech-like sound, so the main command runs on a fresh machine with nothing to download."""

from __future__ import annotations

import torch


# The drawn face's extent (brow to chin) as fractions of the image: x0, y0, x1, y1.
DRAWN_FACE_BOX = (0.25, 0.21, 0.75, 0.87)


def drawn_portrait(size: int = 256) -> torch.Tensor:
    """A simple frontal face [size, size, 3] in 0..1: background, hair, skin, eyes, mouth."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    image = torch.empty(size, size, 3)
    image[:] = torch.tensor([0.35, 0.55, 0.75]) * (0.8 + 0.2 * (1 - y) / 2)[..., None]

    def paint(mask: torch.Tensor, rgb: tuple[float, float, float]) -> None:
        image[mask] = torch.tensor(rgb)

    paint(((x / 0.62) ** 2 + ((y + 0.05) / 0.78) ** 2) < 1, (0.22, 0.14, 0.08))  # hair
    paint(((x / 0.5) ** 2 + ((y - 0.08) / 0.66) ** 2) < 1, (0.93, 0.76, 0.62))  # face
    for side in (-1, 1):
        paint((((x - side * 0.2) / 0.09) ** 2 + ((y + 0.08) / 0.05) ** 2) < 1, (0.98, 0.98, 0.98))
        paint((((x - side * 0.2) / 0.04) ** 2 + ((y + 0.08) / 0.04) ** 2) < 1, (0.15, 0.1, 0.08))
    paint(((x / 0.2) ** 2 + ((y - 0.42) / 0.06) ** 2) < 1, (0.7, 0.25, 0.25))  # mouth
    return image.clamp(0, 1)


def speech_like_audio(seconds: float = 2.0, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """A voiced sound with syllable-rate loudness changes and pauses, mono [1, T] in -1..1."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    syllables = (0.5 + 0.5 * torch.sin(2 * torch.pi * 3.5 * t)) * (torch.sin(2 * torch.pi * 0.5 * t) > -0.5)
    pitch = 120 + 20 * torch.sin(2 * torch.pi * 0.7 * t)
    phase = 2 * torch.pi * torch.cumsum(pitch, 0) / sample_rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 6))
    wave = 0.25 * syllables * voice + 0.005 * torch.randn(t.shape, generator=gen)
    return wave[None].clamp(-1, 1)
