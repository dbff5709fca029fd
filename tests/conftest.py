import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
warnings.filterwarnings("ignore", message=".*should be kept in float32.*")


@pytest.fixture(scope="session")
def tiny_pipeline():
    from emo_pipeline.pipeline import EMOPipeline
    from emo_pipeline.tiny import tiny_components

    return EMOPipeline(*tiny_components())


@pytest.fixture(scope="session")
def tiny_portrait(tiny_pipeline):
    gen = torch.Generator().manual_seed(0)
    return tiny_pipeline.prepare_portrait(torch.rand(96, 96, 3, generator=gen), face_box=(0.25, 0.2, 0.75, 0.8))


def speech_like(seconds: float, sample_rate: int = 16000, channels: int = 1, seed: int = 0) -> torch.Tensor:
    """A voiced, syllable-modulated waveform [channels, T]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(int(round(seconds * sample_rate))) / sample_rate
    envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * 4 * t)
    voice = torch.sin(2 * torch.pi * 140 * t) + 0.3 * torch.sin(2 * torch.pi * 280 * t)
    wave = 0.3 * envelope * voice + 0.01 * torch.randn(t.shape, generator=gen)
    return wave.expand(channels, -1).clone()


def decoded_frames(path) -> torch.Tensor:
    """Every frame of a video file as uint8 [F, H, W, 3], decoded with PyAV."""
    import av

    with av.open(str(path)) as container:
        return torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(video=0)])
