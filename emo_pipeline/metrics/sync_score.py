"""Sync-C, Sync-D and the audio-video offset, computed as syncnet_python's SyncNetInstance.evaluate computes
them once it has read a face-track video and its sound.

What evaluate() does with its inputs, and so what this does:
- frames: the whole 224×224 face crop of each video frame (run_pipeline.py's crop_video output, read back with
  cv2.imread), in colour, BGR channel order, values 0..255 as floats, no normalisation (face_tracks.py's crops
  are BGR already: pass bgr=True; the pack's own RGB frames: the default). It crops nothing further
  (no lower half) and does not convert to grey: the lip stream's first convolution takes three channels.
- audio: MFCCs [13, N] of the 16 kHz mono int16 sound (see mfcc.py) and the number of samples, because the
  number of scored frames is min(video frames, floor(samples / 640)).
- windows: `lastframe = min_length - 5` windows starting at frames 0 .. lastframe-1 (one fewer than would fit,
  as evaluate() counts them); window i is frames i..i+4 and MFCC frames 4i..4i+19 (0.2 s), in batches of 20.
- distances: for every window i and offset k in 0..2·vshift, the Euclidean distance (pairwise_distance, with its
  1e-6 eps) between lip embedding i and audio embedding i+k-vshift, the audio embeddings being padded with
  vshift zero vectors at both ends (out-of-range offsets are compared with zeros, not left out).
- per offset the mean over windows; Sync-D = the smallest mean, Sync-C = median − smallest, offset = vshift −
  argmin (lip window i matching audio window i+s gives −s: negative when the sound comes late, positive when
  early), and per window the confidence median − that window's distance
  at the chosen offset, through a 9-tap median filter with zero padding (scipy.signal.medfilt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from .syncnet import CROP, MFCC_WINDOW, VIDEO_WINDOW, SyncNet

VSHIFT = 15
BATCH_SIZE = 20  # run_syncnet.py's default; eval-mode BatchNorm makes the result independent of it
SAMPLES_PER_FRAME = 640  # 16 kHz / 25 fps
MFCC_PER_FRAME = 4  # 100 Hz MFCCs / 25 fps
MEDIAN_TAPS = 9


@dataclass
class SyncScores:
    """offset: vshift − argmin, in frames (−s when the sound comes s frames late); sync_c: confidence (median −
    min); sync_d: the smallest mean distance; distances: [windows, 2·vshift+1] per window and offset (offset index
    k stands for a shift of k − vshift); mean_distances: [2·vshift+1]; frame_confidence: [windows], evaluate()'s
    median-filtered per-frame confidence; windows: how many 5-frame windows were scored."""

    offset: int
    sync_c: float
    sync_d: float
    distances: np.ndarray
    mean_distances: np.ndarray
    frame_confidence: np.ndarray
    windows: int


def _checked_frames(frames: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The face crops as [T, 224, 224, 3] (grey repeated into three equal channels, as cv2.imread reads a grey
    picture), uint8 or float, checked."""
    # a copy only for NumPy views torch cannot wrap (a [..., ::-1] channel flip has a negative stride)
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    if x.ndim == 3:
        x = x[..., None].expand(*x.shape, 3)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"SyncNet scores face crops [frames, {CROP}, {CROP}, 3] (or grey [frames, {CROP}, "
                         f"{CROP}]); got shape {tuple(x.shape)}.")
    if tuple(x.shape[1:3]) != (CROP, CROP):
        raise ValueError(f"SyncNet's face crops are {CROP}×{CROP} pixels; got {x.shape[2]}×{x.shape[1]}. Crop and "
                         f"resize each frame's face to {CROP}×{CROP} first.")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"Frames must be uint8 (0..255) or floats (0..1); got {x.dtype}.")
    return x


def _to_network(x: torch.Tensor, bgr: bool) -> torch.Tensor:
    """[..., H, W, 3] uint8 0..255 or float 0..1 → float32 [..., 3, H, W] BGR in 0..255, as evaluate() feeds
    cv2.imread's frames (converted a batch at a time: a whole clip in float32 would be 0.6 MB a frame)."""
    x = x.float() if x.dtype == torch.uint8 else x.float() * 255.0  # the pack's float frames are 0..1
    if not bgr:
        x = x.flip(-1)  # RGB → BGR, the order SyncNet was trained on (OpenCV's)
    return rearrange(x, "... h w c -> ... c h w")


def window_count(frames: int, mfcc_frames: int, samples: int | None = None) -> int:
    """How many 5-frame windows evaluate() scores: min(frames, floor(samples / 640)) − 5. Without the sample
    count, the audio's frames are the most the MFCCs can cover."""
    audio_frames = samples // SAMPLES_PER_FRAME if samples is not None else (mfcc_frames + 4) // MFCC_PER_FRAME
    return min(frames, audio_frames) - VIDEO_WINDOW


@torch.no_grad()
def embed(network: SyncNet, frames: torch.Tensor | np.ndarray, mfcc: torch.Tensor | np.ndarray,
          samples: int | None = None, batch_size: int = BATCH_SIZE, bgr: bool = False
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of every scored window: ([windows, 1024], [windows, 1024]) float32 on the CPU.

    frames: the face crops [T, 224, 224, 3] RGB (bgr=True if already BGR), uint8 0..255 or float 0..1, or grey
    [T, 224, 224]; mfcc: [13, N] (mfcc.syncnet_mfcc); samples: the 16 kHz sample count the MFCCs came from."""
    video = _checked_frames(frames)
    cc = mfcc if isinstance(mfcc, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(mfcc))
    if cc.ndim != 2 or cc.shape[0] != 13:
        raise ValueError(f"SyncNet takes MFCCs [13, frames] (13 coefficients, 100 per second); got shape "
                         f"{tuple(cc.shape)}.")
    cc = cc.float()  # evaluate() casts float64 MFCCs to float32 before the network
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    windows = window_count(video.shape[0], cc.shape[1], samples)
    if windows < 1:
        have = min(video.shape[0], samples // SAMPLES_PER_FRAME if samples is not None else video.shape[0])
        raise ValueError(f"Too short to score: SyncNet's scoring needs at least {VIDEO_WINDOW + 1} frames of video "
                         f"and of sound (0.24 s at 25 fps), and here {video.shape[0]} frames and "
                         f"{cc.shape[1]} MFCC frames give {max(have, 0)} usable frames.")
    needed = (windows - 1) * MFCC_PER_FRAME + MFCC_WINDOW
    if cc.shape[1] < needed:
        raise ValueError(f"The MFCCs are shorter than the sound they should come from: {windows} windows need "
                         f"{needed} MFCC frames, got {cc.shape[1]}. Compute them from the same samples.")
    device = next(network.parameters()).device
    network.eval()
    lip, aud = [], []
    for start in range(0, windows, batch_size):
        index = range(start, min(windows, start + batch_size))
        clips = _to_network(torch.stack([video[i:i + VIDEO_WINDOW] for i in index]), bgr)
        # contiguous as evaluate()'s torch.cat makes it: a channels-last view would pick another convolution kernel
        clips = rearrange(clips, "n t c h w -> n c t h w").contiguous()
        lip.append(network.forward_lip(clips.to(device)).float().cpu())
        cuts = torch.stack([cc[:, i * MFCC_PER_FRAME:i * MFCC_PER_FRAME + MFCC_WINDOW] for i in index])
        aud.append(network.forward_aud(rearrange(cuts, "n f w -> n 1 f w").to(device)).float().cpu())
    return torch.cat(lip), torch.cat(aud)


def offset_distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """[windows, 2·vshift+1]: calc_pdist's distances of each lip embedding to the audio embeddings shifted by
    −vshift..vshift (zero vectors past either end)."""
    if lip.ndim != 2 or lip.shape != aud.shape:
        raise ValueError(f"Lip and audio embeddings must both be [windows, dim] and alike; got {tuple(lip.shape)} "
                         f"and {tuple(aud.shape)}.")
    if vshift < 0:
        raise ValueError(f"vshift must be 0 or more, got {vshift}.")
    span = 2 * vshift + 1
    padded = F.pad(aud, (0, 0, vshift, vshift))
    shifted = rearrange(padded.unfold(0, span, 1), "n d k -> n k d")  # row i: audio i-vshift .. i+vshift
    return F.pairwise_distance(lip[:, None, :].expand_as(shifted), shifted)


def _medfilt_zero(x: np.ndarray, taps: int) -> np.ndarray:
    # scipy.signal.medfilt: the median of each `taps` window, zeros beyond the ends
    half = taps // 2
    padded = np.concatenate([np.zeros(half, x.dtype), x, np.zeros(half, x.dtype)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)
    return np.median(windows, axis=1).astype(x.dtype)


def score_embeddings(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> SyncScores:
    """The scores from embeddings already computed: evaluate()'s offset, Sync-C, Sync-D and per-frame
    confidence."""
    dists = offset_distances(lip.float(), aud.float(), vshift)
    mdist = dists.T.contiguous().mean(1)  # evaluate() stacks per-window rows as columns, then averages
    minval, minidx = torch.min(mdist, 0)
    median = torch.median(mdist)  # 2·vshift+1 values: an odd count, so the true middle value
    fdist = dists[:, minidx].numpy()
    fconf = median.numpy() - fdist
    return SyncScores(offset=int(vshift - minidx.item()), sync_c=float(median - minval), sync_d=float(minval),
                      distances=dists.numpy(), mean_distances=mdist.numpy(),
                      frame_confidence=_medfilt_zero(fconf, MEDIAN_TAPS), windows=int(dists.shape[0]))


def score(network: SyncNet, frames: torch.Tensor | np.ndarray, mfcc: torch.Tensor | np.ndarray,
          samples: int | None = None, vshift: int = VSHIFT, batch_size: int = BATCH_SIZE,
          bgr: bool = False) -> SyncScores:
    """Lip sync of one face track as syncnet_python's evaluate() scores it.

    frames: the 224² face crops [T, 224, 224, 3] RGB at 25 fps (bgr=True if already in OpenCV's order), uint8
    0..255 or float 0..1, or grey [T, 224, 224]; mfcc: [13, N] from mfcc.syncnet_mfcc; samples: the number of
    16 kHz samples behind the MFCCs (without it, as many frames as the MFCCs cover)."""
    lip, aud = embed(network, frames, mfcc, samples, batch_size, bgr)
    return score_embeddings(lip, aud, vshift)
