"""Our own training of a SyncNet (emo_pipeline.metrics.syncnet, any width) on video clips with sound, so that the
lip-sync scoring (metrics.sync_score) can be shown to mean something without syncnet_python's weights: a net
trained here on the synthetic drawn-face clips (training/synthetic.py) must find the offset of audio shifted
against the video and rank in-sync sound above another clip's (tests/test_sync_behaviour.py).

Inputs are exactly what the scoring feeds the network: the frames as 224² crops (RGB uint8, turned into BGR 0..255
by sync_score's own conversion), five frames per window, and the MFCCs of the clip's sound as syncnet_python
computes them (metrics.mfcc.syncnet_mfcc: mono 16 kHz int16, python_speech_features' defaults), 20 MFCC frames
(0.2 s) per window, window i being video frames i..i+4 and MFCC frames 4i..4i+19. The crop of a synthetic clip is
its whole frame (64² → 224², bilinear): the drawn face fills most of it, and the sidecar's face box is the union
over the clip's head turns, nearly the whole frame anyway; `face_box` crops another region when given.

Objective: a cross-entropy over candidate audio offsets ("multi-way matching", Chung et al. 2019, "Perfect
match"), with logits −distance, the Euclidean distance the scoring takes its minimum over. Each sampled lip window
i of a clip is compared with that clip's audio windows i+s for s in −max_shift..max_shift (those inside the
clip); the target is s = 0. Negatives from the same clip carry the same face and voice, so only the timing of
mouth against sound can tell them apart. Seeded (initialisation, window sampling), a fixed number of steps, no
wall clock: the same seed, clips and thread count give the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from ..io.loading import write_safetensors
from ..metrics.mfcc import SYNCNET_RATE, mfcc as compute_mfcc, syncnet_mfcc
from ..metrics.sync_score import MFCC_PER_FRAME, SAMPLES_PER_FRAME, _to_network, window_count
from ..metrics.syncnet import CROP, MFCC_WINDOW, VIDEO_WINDOW, SyncNet

FORMAT = "emo_pipeline trained SyncNet"


@dataclass
class SyncClip:
    """One clip as SyncNet sees it: crops [T, 224, 224, 3] uint8 RGB, MFCCs [13, N] float32, the 16 kHz int16
    samples they came from, and the number of 5-frame windows the scoring would use."""

    path: Path
    crops: torch.Tensor
    mfcc: torch.Tensor
    samples: np.ndarray
    windows: int


def face_crops(path: str | Path, face_box: Sequence[float] | None = None, size: int = CROP) -> torch.Tensor:
    """A video's frames as size² crops [T, size, size, 3] uint8 RGB: the whole frame (face_box None) or the box
    (x0, y0, x1, y1 as fractions of the frame), resized bilinearly."""
    with av.open(str(path)) as container:
        frames = [torch.from_numpy(f.to_ndarray(format="rgb24")) for f in container.decode(container.streams.video[0])]
    if not frames:
        raise ValueError(f"{Path(path).name} has no video frames.")
    x = torch.stack(frames)
    if face_box is not None:
        h, w = x.shape[1:3]
        x0, y0, x1, y1 = face_box
        x = x[:, int(y0 * h):max(int(y1 * h), int(y0 * h) + 1), int(x0 * w):max(int(x1 * w), int(x0 * w) + 1)]
    out = []
    for chunk in x.split(32):  # a batch at a time: float copies of 224² frames are large
        chunk = F.interpolate(rearrange(chunk, "t h w c -> t c h w").float(), size=(size, size), mode="bilinear",
                              antialias=True, align_corners=False)
        out.append(rearrange(chunk.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c"))
    return torch.cat(out).contiguous()


def load_sync_clip(path: str | Path, face_box: Sequence[float] | None = None) -> SyncClip:
    """A clip's crops and its own sound's MFCCs (see face_crops for the crop)."""
    crops = face_crops(path, face_box)
    cc, samples = syncnet_mfcc(path)
    return SyncClip(Path(path), crops, torch.from_numpy(cc).float(), samples,
                    window_count(crops.shape[0], cc.shape[1], len(samples)))


def shift_samples(samples: np.ndarray, frames: int) -> np.ndarray:
    """The sound moved by `frames` video frames (640 samples each at 16 kHz / 25 fps), padded with silence, the
    length kept: positive = the sound comes earlier than the picture (what the scoring reports as offset
    +frames), negative = later."""
    n, cut = len(samples), abs(frames) * SAMPLES_PER_FRAME
    silence = np.zeros(min(cut, n), samples.dtype)
    if frames >= 0:
        return np.concatenate([samples[cut:], silence])
    return np.concatenate([silence, samples[:max(n - cut, 0)]])


def mfcc_of(samples: np.ndarray) -> np.ndarray:
    """MFCCs [13, N] of 16 kHz int16 samples, as syncnet_mfcc computes them."""
    return np.ascontiguousarray(compute_mfcc(samples, SYNCNET_RATE).T)


def _audio_windows(cc: torch.Tensor, windows: int) -> torch.Tensor:
    """[windows, 1, 13, 20]: MFCC frames 4i..4i+19 for every window i."""
    cuts = cc.unfold(1, MFCC_WINDOW, MFCC_PER_FRAME)[:, :windows]  # [13, windows, 20]
    return rearrange(cuts, "f n w -> n 1 f w").contiguous()


def _lip_windows(crops: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """[n, 3, 5, 224, 224] BGR 0..255 for windows starting at `starts`, as the scoring builds them."""
    clips = _to_network(torch.stack([crops[i:i + VIDEO_WINDOW] for i in starts.tolist()]), bgr=False)
    return rearrange(clips, "n t c h w -> n c t h w").contiguous()


def offset_loss(network: SyncNet, clips: Sequence[SyncClip], starts: Sequence[torch.Tensor], max_shift: int
                ) -> tuple[torch.Tensor, float]:
    """Cross-entropy over audio offsets −max_shift..max_shift (target 0) of the lip windows starting at
    `starts[c]` in `clips[c]`, logits −‖lip − audio‖; and the share of windows whose nearest candidate is the
    in-sync one."""
    lip = network.forward_lip(torch.cat([_lip_windows(c.crops, s) for c, s in zip(clips, starts)]))
    aud = network.forward_aud(torch.cat([_audio_windows(c.mfcc, c.windows) for c in clips]))
    shifts = torch.arange(-max_shift, max_shift + 1)
    logits, row, first = [], 0, 0
    for clip, start in zip(clips, starts):
        index = start[:, None] + shifts[None, :]  # [n, candidates] audio windows of this clip
        valid = (index >= 0) & (index < clip.windows)
        candidates = aud[first + index.clamp(0, clip.windows - 1)]  # [n, candidates, dim]
        own = lip[row:row + len(start), None, :]
        distance = (own - candidates).pow(2).sum(-1).add(1e-6).sqrt()
        logits.append((-distance).masked_fill(~valid, float("-inf")))
        row, first = row + len(start), first + clip.windows
    logits = torch.cat(logits)
    target = torch.full((logits.shape[0],), max_shift)
    correct = float((logits.argmax(1) == target).float().mean())
    return F.cross_entropy(logits, target), correct


@dataclass
class TrainResult:
    network: SyncNet
    losses: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)


def train_syncnet(clips: Sequence[str | Path | SyncClip], steps: int, width: float = 0.0625, embedding: int = 64,
                  seed: int = 0, clips_per_step: int = 4, windows_per_clip: int = 4, max_shift: int = 15,
                  lr: float = 2e-3, face_box: Sequence[float] | None = None,
                  log: Callable[[str], None] | None = None, log_every: int = 50) -> TrainResult:
    """Train a SyncNet of this width on clips (MP4 paths with sound, or SyncClips already loaded) for `steps`
    steps of `clips_per_step` clips × `windows_per_clip` lip windows each (Adam, learning rate falling linearly
    to a tenth). Returns the network in eval mode and the per-step loss and in-sync accuracy."""
    loaded = [c if isinstance(c, SyncClip) else load_sync_clip(c, face_box) for c in clips]
    short = [c.path.name for c in loaded if c.windows < 2 * max_shift + 1]
    if short:
        raise ValueError(f"Clips too short to train with offsets of ±{max_shift} frames (each needs "
                         f"{2 * max_shift + 1 + VIDEO_WINDOW} frames of video and sound): {', '.join(short)}.")
    torch.manual_seed(seed)
    network = SyncNet(embedding=embedding, width=width)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    result = TrainResult(network)
    network.train()
    per_step = min(clips_per_step, len(loaded))
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * (1 - 0.9 * step / max(steps, 1))
        chosen = torch.randperm(len(loaded), generator=gen)[:per_step].tolist()
        batch = [loaded[i] for i in chosen]
        starts = [torch.randint(c.windows, (windows_per_clip,), generator=gen) for c in batch]
        loss, correct = offset_loss(network, batch, starts, max_shift)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        result.losses.append(float(loss.detach()))
        result.accuracy.append(correct)
        if log is not None and (step + 1) % log_every == 0:
            recent = slice(-log_every, None)
            log(f"step {step + 1}/{steps}: loss {np.mean(result.losses[recent]):.3f}, "
                f"in sync nearest {np.mean(result.accuracy[recent]):.2f}")
    network.eval()
    return result


def save_syncnet(network: SyncNet, path: str | Path, metadata: dict[str, object] | None = None) -> Path:
    """The network's state dict as float32 safetensors, with its width and embedding size (and any `metadata`,
    as JSON strings) in the header."""
    state = network.state_dict()
    embedding = network.netfclip[-1].out_features
    header = {"format": FORMAT, "width": repr(network.width), "embedding": str(embedding)}
    header.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    shapes = {k: (v.shape, v.dtype) for k, v in state.items()}
    return write_safetensors(path, shapes, lambda k: state[k].contiguous(), header)


def load_trained_syncnet(path: str | Path) -> SyncNet:
    """A SyncNet written by save_syncnet, built at its width and embedding size, loaded strictly, in eval mode."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise ValueError(f"{Path(path).name} was not written by save_syncnet (no '{FORMAT}' in its header).")
        state = {k: f.get_tensor(k) for k in f.keys()}
    network = SyncNet(embedding=int(meta["embedding"]), width=float(meta["width"]))
    network.load_state_dict(state, strict=True)
    return network.eval()


def metadata_of(path: str | Path) -> dict[str, str]:
    """The header metadata save_syncnet wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


__all__ = ["SyncClip", "TrainResult", "face_crops", "load_sync_clip", "shift_samples", "mfcc_of", "offset_loss",
           "train_syncnet", "save_syncnet", "load_trained_syncnet", "metadata_of"]
