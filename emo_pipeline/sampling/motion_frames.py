"""Motion frames (EMO, Hallo, Hallo2): each clip continues from the last n frames of the one before; the
ReferenceNet runs once per clip on the portrait and those frames, and their features join each temporal
module's frame sequence. EMO's first clip has zero feature maps for them; Hallo's, the portrait."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..audio.features import AudioFeatures
from ..portrait import Portrait
from .clip_loop import ClipConditions, iter_clip_video
from .steps import SamplingOptions, SamplingPipeline


class MotionFrameConditions(ClipConditions):
    def reference_features(self, previous: torch.Tensor | None, generator: torch.Generator,
                           memory: Any = None) -> tuple[list, Any, None]:
        cfg, net = self.pipe.config, self.pipe.net
        f, n, rows = self.opts.frames_per_clip, self.opts.motion_frames, self.identity.shape[0]
        latents, context, use_reference, zero_motion = self.reference_input(previous, generator)
        features = net.reference_unet(latents, context)
        if zero_motion:
            features = [
                torch.cat([x.view(rows, 1, *x.shape[1:]), x.new_zeros(rows, n, *x.shape[1:])], dim=1).flatten(0, 1)
                for x in features
            ]
        reference, motion = net.denoising_unet.prepare_reference(features, rows, f, use_reference,
                                                                 cfg.reference_tiles_batch)
        return reference, motion, None


def iter_video(pipe: SamplingPipeline, portrait: Portrait, audio: AudioFeatures,
               opts: SamplingOptions) -> Iterator[torch.Tensor]:
    """Each clip's frames [f, H, W, 3] in order, as soon as they are decoded."""
    yield from iter_clip_video(pipe, portrait, audio, opts, MotionFrameConditions)
