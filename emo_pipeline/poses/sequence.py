"""EchoMimic v2's hand-pose sequence: per-frame hand keypoints, the area they are drawn in and where that area
sits in the square frame, checked, stretched to the audio's length and drawn a window at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from einops import rearrange

from ..io.errors import NamedPlainly

KEYPOINTS = 21  # DWPose's hand: wrist, then four joints per finger from the thumb out
BODY_KEYPOINTS = 18  # OpenPose's body (DWPose's 17 with the neck added): used to fit the poses to a photo
EXTEND_MODES = ("pingpong", "loop", "hold")
_EXTEND_WORDS = {"pingpong": "ping-pong", "loop": "looping", "hold": "holding the last pose"}
_LISTED = 8  # frames named in a message before "and N more"

# draw(hands[N, 21, 2] normalised (x, y), scores[N, 21], height, width) -> uint8 [height, width, 3] RGB
Drawer = Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]


class PoseError(NamedPlainly, ValueError):
    """A pose sequence (or a pose file) that cannot drive a render, said with what to change."""


def _frames_named(frames: Sequence[int]) -> str:
    shown = ", ".join(str(f) for f in frames[:_LISTED])
    return shown + (f" and {len(frames) - _LISTED} more" if len(frames) > _LISTED else "")


@dataclass(frozen=True, eq=False)  # eq=False: tensors have no single truth value to compare by
class PoseSequence:
    """Hand keypoints for every frame of a video, as EchoMimic v2 draws them.

    hands: float32 [F, N, 21, 2], (x, y) as fractions of the drawn area; scores: float32 [F, N, 21] (DWPose's raw
    scores, which can exceed 1; 0 for a hand or point that is missing). area: (height, width) in pixels of the
    drawn area (the reference's imh_new, imw_new); placement: (rb, re, cb, ce), the rows and columns of the square
    frame_size² frame the area is pasted into. body, body_scores: float32 [F, 18, 2] and [F, 18], the main person's
    OpenPose body keypoints in the same coordinates, when the source has them (EchoMimic v2's demo files, DWPose,
    POSE_KEYPOINT): never drawn, only used to fit the hands to a photo (poses.fitting)."""

    hands: torch.Tensor
    scores: torch.Tensor
    area: tuple[int, int]
    placement: tuple[int, int, int, int]
    frame_size: int = 768
    fps: float = 24.0
    source: str = "poses"
    body: torch.Tensor | None = None
    body_scores: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.hands.shape[0]) if self.hands.dim() else 0

    @property
    def hand_count(self) -> int:
        return int(self.hands.shape[1])

    def validate(self) -> "PoseSequence":
        """The sequence itself, or a PoseError naming what is wrong with it and what to do."""
        where = self.source
        if len(self) == 0:
            raise PoseError(f"{where}: the pose sequence has no frames: give a pose folder or POSE_KEYPOINT with at "
                            "least one frame.")
        if self.hands.dim() != 4 or tuple(self.hands.shape[2:]) != (KEYPOINTS, 2):
            raise PoseError(f"{where}: hand keypoints have shape {tuple(self.hands.shape)}, not [frames, hands, 21, "
                            "2]: give DWPose hand keypoints (21 points of x, y per hand).")
        if tuple(self.scores.shape) != tuple(self.hands.shape[:3]):
            raise PoseError(f"{where}: hand scores have shape {tuple(self.scores.shape)}, not "
                            f"{tuple(self.hands.shape[:3])} (one per keypoint): give the scores that came with the "
                            "keypoints.")
        if self.frame_size <= 0 or min(self.area) <= 0:
            raise PoseError(f"{where}: the poses are drawn in an area of {self.area[0]}×{self.area[1]} pixels inside "
                            f"a {self.frame_size}² frame; neither may be 0 pixels. Re-extract the poses (their "
                            "draw_pose_params or canvas size is broken).")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise PoseError(f"{where}: the poses' frame rate is {self.fps}: give a positive frame rate (24 for "
                            "EchoMimic v2's demo poses).")
        rb, re, cb, ce = self.placement
        if not (0 <= rb <= re <= self.frame_size and 0 <= cb <= ce <= self.frame_size):
            raise PoseError(f"{where}: the pose area is placed at rows {rb}:{re}, columns {cb}:{ce}, outside the "
                            f"{self.frame_size}² frame: re-extract the poses for a {self.frame_size}² frame.")
        if (re - rb, ce - cb) != tuple(self.area):
            raise PoseError(f"{where}: the pose area is {self.area[0]}×{self.area[1]} pixels but its place in the "
                            f"frame (rows {rb}:{re}, columns {cb}:{ce}) is {re - rb}×{ce - cb}: re-extract the poses "
                            "(their draw_pose_params disagree with each other).")
        if (self.body is None) != (self.body_scores is None) or self.body is not None and (
                tuple(self.body.shape) != (len(self), BODY_KEYPOINTS, 2)
                or tuple(self.body_scores.shape) != (len(self), BODY_KEYPOINTS)):
            raise PoseError(f"{where}: body keypoints of shape "
                            f"{None if self.body is None else tuple(self.body.shape)} with scores of shape "
                            f"{None if self.body_scores is None else tuple(self.body_scores.shape)}, not [{len(self)}, "
                            f"{BODY_KEYPOINTS}, 2] and [{len(self)}, {BODY_KEYPOINTS}]: give OpenPose's 18 body points "
                            "for every frame, or none.")
        finite = (torch.isfinite(self.hands).flatten(1).all(1) & torch.isfinite(self.scores).flatten(1).all(1))
        if not bool(finite.all()):
            bad = torch.nonzero(~finite).flatten().tolist()
            raise PoseError(f"{where}: frame{'s' if len(bad) > 1 else ''} {_frames_named(bad)} hold NaN or infinite "
                            "hand keypoints or scores: re-extract the poses for those frames, or cut them out.")
        if not bool(self.visible().any()):
            raise PoseError(f"{where}: no frame has a hand to draw (every score is 0, or every point lies off the "
                            "drawn area): give poses with hands in view, e.g. one of EchoMimic v2's demo pose "
                            "folders, or DWPose with hand detection enabled.")
        return self

    def visible(self) -> torch.Tensor:
        """[F, N, 21] bool: the points the drawing shows (a score above 0, inside the area; the reference skips
        points at or left of / above pixel 0)."""
        x, y = self.hands[..., 0], self.hands[..., 1]
        return (self.scores > 0) & (x > 0) & (x < 1) & (y > 0) & (y < 1)

    def frames_for(self, indices: Sequence[int] | torch.Tensor) -> "PoseSequence":
        """The sub-sequence of the given frames, in that order (a context window's frame indices)."""
        index = (indices.to(torch.long) if isinstance(indices, torch.Tensor)
                 else torch.tensor(list(indices), dtype=torch.long)).flatten()
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(self)):
            raise PoseError(f"{self.source}: frames {int(index.min())}..{int(index.max())} asked of a pose sequence "
                            f"of {len(self)} frames: extend the poses to the video's length first (extend_to).")
        body = {} if self.body is None else {"body": self.body[index], "body_scores": self.body_scores[index]}
        return replace(self, hands=self.hands[index], scores=self.scores[index], **body)

    def extend_to(self, frames: int, mode: str = "pingpong") -> tuple["PoseSequence", str]:
        """The sequence made exactly `frames` long (the audio's frame count) and the line that tells the user how;
        the line is empty when the lengths already match. Longer sequences are cut. `mode` for a shorter one:
        "pingpong" (0, 1, …, n-1, n-2, …, 1, 0, 1, …: no end frame shown twice in a row), "loop" (0, …, n-1,
        0, …), or "hold" (the last pose held)."""
        if mode not in EXTEND_MODES:
            raise PoseError(f"pose extension {mode!r} is not known: choose one of {', '.join(EXTEND_MODES)}.")
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise PoseError(f"{self.source}: the poses cannot be made {frames!r} frames long: the video needs a "
                            "whole number of frames, at least 1; give a longer audio clip.")
        n, frames = len(self), int(frames)
        if n == 0:
            self.validate()  # says there are no frames
        seconds = f"{frames / self.fps:.1f} s of audio"
        if frames == n:
            return self, ""
        if frames < n:
            return (self.frames_for(range(frames)),
                    f"poses: {n} frames ({self.source}) cut to {frames} for {seconds}")
        return (self.frames_for(extension_indices(n, frames, mode)),
                f"poses: {n} frames ({self.source}) extended to {frames} by {_EXTEND_WORDS[mode]} for {seconds}")

    def aligned(self, scale: float, offset: tuple[float, float]) -> "PoseSequence":
        """The hands scaled about the area's centre and then moved by `offset` (dx, dy as fractions of the area's
        width and height): the plain centre-and-scale fit of the demo poses to a photo. Points with a score of 0
        (missing) stay where they are, so they stay undrawn."""
        if not (math.isfinite(scale) and scale > 0) or not all(math.isfinite(v) for v in offset):
            raise PoseError(f"pose alignment scale {scale} and offset {tuple(offset)}: give a positive scale (1 keeps "
                            "the size) and a finite offset (0, 0 keeps the place).")
        shift = torch.tensor([float(offset[0]), float(offset[1])], dtype=self.hands.dtype)

        def move(points: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return torch.where((scores > 0).unsqueeze(-1), (points - 0.5) * float(scale) + 0.5 + shift, points)

        body = {} if self.body is None else {"body": move(self.body, self.body_scores)}
        return replace(self, hands=move(self.hands, self.scores), **body)

    def for_frame_size(self, size: int) -> "PoseSequence":
        """The same poses for a square frame of `size` pixels (a model that renders another size than the one the
        poses were placed for): the area and its place scaled, the keypoints (fractions of the area) unchanged."""
        if size == self.frame_size:
            return self
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise PoseError(f"{self.source}: a frame of {size!r} pixels: give the model's frame size, a whole number.")
        k = size / self.frame_size
        rb, _, cb, _ = self.placement
        top, left = round(rb * k), round(cb * k)
        height = max(1, min(size - top, round(self.area[0] * k)))
        width = max(1, min(size - left, round(self.area[1] * k)))
        return replace(self, area=(height, width), placement=(top, top + height, left, left + width), frame_size=size)

    def tensor_frames(self, indices: Sequence[int] | torch.Tensor, draw: Drawer) -> torch.Tensor:
        """float32 [3, len(indices), S, S] in [0, 1], RGB: each frame drawn by `draw` at the area's size and pasted
        into a black S² frame at `placement` (as the reference's infer.py assembles its pose images). Only these
        frames are drawn, so a long video never holds every pose image at once."""
        part = self.frames_for(indices)
        rb, re, cb, ce = self.placement
        height, width = self.area
        size = self.frame_size
        out = torch.zeros(3, len(part), size, size, dtype=torch.float32)
        hands, scores = part.hands.detach().cpu().numpy(), part.scores.detach().cpu().numpy()
        for i in range(len(part)):
            # float64 for the drawer: the reference draws from float64 keypoints (int(x * W) truncates)
            image = np.asarray(draw(hands[i].astype(np.float64), scores[i].astype(np.float64), height, width))
            if image.shape != (height, width, 3) or image.dtype != np.uint8:
                raise PoseError(f"the pose drawer returned {image.dtype} {image.shape}, not uint8 ({height}, {width}, "
                                "3): draw each pose as an RGB image of the area's size.")
            out[:, i, rb:re, cb:ce] = rearrange(torch.from_numpy(image), "h w c -> c h w").float() / 255.0
        return out


def extension_indices(length: int, frames: int, mode: str = "pingpong") -> list[int]:
    """Which of `length` pose frames each of `frames` video frames shows."""
    if mode == "loop":
        return [i % length for i in range(frames)]
    if mode == "hold":
        return [min(i, length - 1) for i in range(frames)]
    if length == 1:
        return [0] * frames
    period = 2 * (length - 1)  # 0 … n-1 … 1, then again from 0
    return [i % period if i % period < length else period - i % period for i in range(frames)]
