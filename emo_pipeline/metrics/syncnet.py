"""SyncNet (Chung & Zisserman, "Out of time", 2016) as syncnet_python's SyncNetModel.S builds it: an audio stream
(2-D convolutions on 13×20 MFCC windows) and a lip stream (3-D convolutions on five 224² colour frames), each
ending in two linear layers that give a 1024-d embedding.

The layer order (activations and pools included) is S's, so the state-dict keys are S's: netcnnaud.N.*,
netfcaud.N.*, netcnnlip.N.*, netfclip.N.*, the same names syncnet_python's loadParameters copies from
`syncnet_v2.model`. That file is a state dict, not a pickled module: loadParameters iterates the unpickled
file's items() and copies each entry into S's own state_dict by name, which only a mapping of those names to
tensors allows. So it is read weights-only (metrics/weights.py) and loaded strictly;
the one allowance is BatchNorm's `num_batches_tracked` counters, which torch before 0.4.1 did not write and
which inference never reads (BatchNorm in eval mode uses the running statistics), so a file without them
loads with the counters left at zero.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import nn

from .weights import read_strict_state

EMBEDDING = 1024
MFCC_WINDOW = 20  # 0.2 s of 100 Hz MFCC frames per 5-frame video window
VIDEO_WINDOW = 5
CROP = 224
EXPECTED_FILE = "syncnet_v2.model (joonson/syncnet_python; mirrored in ByteDance/LatentSync-1.5 under auxiliary/)"


def _conv_bn_relu(conv: nn.Module, bn: nn.Module) -> list[nn.Module]:
    return [conv, bn, nn.ReLU(inplace=True)]


def _channels(count: int, width: float) -> int:
    """A channel count scaled by `width` (1.0: syncnet_python's own count), at least one."""
    return count if width == 1.0 else max(1, round(count * width))


def _audio_cnn(width: float = 1.0) -> nn.Sequential:
    c64, c192, c384, c256, c512 = (_channels(c, width) for c in (64, 192, 384, 256, 512))
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv2d(1, c64, 3, padding=1), nn.BatchNorm2d(c64)),
        nn.MaxPool2d(1, 1),  # a no-op, kept so the later indices (the file's keys) line up
        *_conv_bn_relu(nn.Conv2d(c64, c192, 3, padding=1), nn.BatchNorm2d(c192)),
        nn.MaxPool2d(3, stride=(1, 2)),
        *_conv_bn_relu(nn.Conv2d(c192, c384, 3, padding=1), nn.BatchNorm2d(c384)),
        *_conv_bn_relu(nn.Conv2d(c384, c256, 3, padding=1), nn.BatchNorm2d(c256)),
        *_conv_bn_relu(nn.Conv2d(c256, c256, 3, padding=1), nn.BatchNorm2d(c256)),
        nn.MaxPool2d(3, stride=2),
        *_conv_bn_relu(nn.Conv2d(c256, c512, (5, 4)), nn.BatchNorm2d(c512)),
    )


def _lip_cnn(width: float = 1.0) -> nn.Sequential:
    c96, c256, c512 = (_channels(c, width) for c in (96, 256, 512))
    return nn.Sequential(
        *_conv_bn_relu(nn.Conv3d(3, c96, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(c96)),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(c96, c256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(c256)),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        *_conv_bn_relu(nn.Conv3d(c256, c256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(c256)),
        *_conv_bn_relu(nn.Conv3d(c256, c256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(c256)),
        *_conv_bn_relu(nn.Conv3d(c256, c256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(c256)),
        nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
        *_conv_bn_relu(nn.Conv3d(c256, c512, (1, 6, 6)), nn.BatchNorm3d(c512)),
    )


def _head(embedding: int, width: float = 1.0) -> nn.Sequential:
    c512 = _channels(512, width)
    return nn.Sequential(nn.Linear(c512, c512), nn.BatchNorm1d(c512), nn.ReLU(), nn.Linear(c512, embedding))


class SyncNet(nn.Module):
    """SyncNet v2's two streams; `forward_aud` and `forward_lip` give the embeddings that are compared.

    `width` scales every convolution's and hidden linear layer's channel count (rounded, at least one) and
    `embedding` sets the output size; the defaults (1.0, 1024) are syncnet_python's network, keys and shapes.
    A narrower one keeps the same layers, keys and input geometry (five 224² frames, 13×20 MFCCs): the small nets
    our own training makes (emo_pipeline.training.syncnet) for tests."""

    def __init__(self, embedding: int = EMBEDDING, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"SyncNet's width must be more than 0, got {width}.")
        self.width = float(width)
        self.netcnnaud = _audio_cnn(width)
        self.netfcaud = _head(embedding, width)
        self.netcnnlip = _lip_cnn(width)
        self.netfclip = _head(embedding, width)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """[N, 1, 13, 20] MFCC windows → [N, embedding]."""
        if mfcc.ndim != 4 or tuple(mfcc.shape[1:]) != (1, 13, MFCC_WINDOW):
            raise ValueError(f"SyncNet's audio stream takes [N, 1, 13, {MFCC_WINDOW}] MFCC windows; got "
                             f"{tuple(mfcc.shape)}.")
        return self.netfcaud(rearrange(self.netcnnaud(mfcc), "n c h w -> n (c h w)"))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """[N, 3, 5, 224, 224] windows of five BGR frames in 0..255 → [N, embedding]."""
        if frames.ndim != 5 or tuple(frames.shape[1:]) != (3, VIDEO_WINDOW, CROP, CROP):
            raise ValueError(f"SyncNet's lip stream takes [N, 3, {VIDEO_WINDOW}, {CROP}, {CROP}] frame windows; "
                             f"got {tuple(frames.shape)}.")
        return self.netfclip(rearrange(self.netcnnlip(frames), "n c t h w -> n (c t h w)"))


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """SyncNet with `syncnet_v2.model`'s weights, in eval mode. The file is read weights-only (no code in it can
    run); every parameter and running statistic must be there with its shape, nothing else may be."""
    # BatchNorm's counters: torch before 0.4.1 did not write them, and inference never reads them
    with torch.device("meta"):
        optional = frozenset(k for k in SyncNet().state_dict() if k.endswith(".num_batches_tracked"))
    state = read_strict_state(path, SyncNet, "SyncNet", EXPECTED_FILE, optional)
    net = SyncNet()
    filled = {k: v for k, v in net.state_dict().items() if k in optional and k not in state}
    net.load_state_dict({**filled, **state}, strict=True)
    return net.to(device).eval()
