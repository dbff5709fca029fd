"""Built-in inputs for `generate` when no portrait or audio is given: a drawn face and a
speech-like sound from the synthetic set the demo model was trained on (held-out seeds), so the
main command runs on a fresh machine with nothing to download."""

from __future__ import annotations

import torch

from .training.synthetic import SAMPLE_RATE, draw_face, random_look, speech_sound

DEMO_SEED = 123456  # not one of the training clips' seeds


def drawn_portrait(size: int = 256, seed: int = DEMO_SEED) -> torch.Tensor:
    """A frontal drawn face [size, size, 3] in 0..1, mouth closed."""
    return draw_face(size, random_look(torch.Generator().manual_seed(seed)), 0.0, 0.0, 0.0)


def drawn_face_box(seed: int = DEMO_SEED) -> tuple[float, float, float, float]:
    """The drawn face's extent (hair to chin) as fractions of the image: x0, y0, x1, y1."""
    look = random_look(torch.Generator().manual_seed(seed))
    half_w = look.face_width * 1.12
    return ((look.center_x - half_w + 1) / 2, (look.center_y - 0.1 - look.face_height * 1.05 + 1) / 2,
            (look.center_x + half_w + 1) / 2, (look.center_y + look.face_height + 1) / 2)


def speech_like_audio(seconds: float = 4.0, sample_rate: int = SAMPLE_RATE, seed: int = DEMO_SEED) -> torch.Tensor:
    """Syllabic voiced sound with pauses, mono [1, T] at 16 kHz."""
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"The built-in sound is made at {SAMPLE_RATE} Hz.")
    gen = torch.Generator().manual_seed(seed)
    random_look(gen)  # the same draws as a synthetic clip of this seed
    return speech_sound(seconds, gen)[0][None]
