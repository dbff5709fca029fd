"""MEMO's memory: clip after clip, as the motion-frame families, but the past reaches a clip through a
decayed linear-attention memory in each temporal module, to which every clip's last frames are added
once (their ReferenceNet features do not join the clip's frame sequence). A resumable render keeps the
memory after each clip."""

from __future__ import annotations

from typing import Any, Iterator

import torch

from ..audio.features import AudioFeatures
from ..models.memory_attention import TemporalMemory
from ..portrait import Portrait
from .clip_loop import ClipConditions, iter_clip_video
from .steps import SamplingOptions, SamplingPipeline

Memory = list[list[TemporalMemory]]  # per temporal block, per module


class MemoryConditions(ClipConditions):
    def reference_features(self, previous: torch.Tensor | None, generator: torch.Generator,
                           memory: Memory | None = None) -> tuple[list, None, Memory]:
        """(the portrait's reference keys/values, no motion features, `memory` with the motion frames added)."""
        cfg, net = self.pipe.config, self.pipe.net
        f, rows = self.opts.frames_per_clip, self.identity.shape[0]
        latents, context, use_reference, _ = self.reference_input(previous, generator)
        features, plain = net.reference_unet(latents, context, with_plain=True)
        reference, _ = net.denoising_unet.prepare_reference(features, rows, f, use_reference,
                                                            cfg.reference_tiles_batch, motion=False)
        return reference, None, net.denoising_unet.prepare_memory(features, plain, rows, memory)

    @staticmethod
    def carry(memory: Memory | None) -> Any:
        return None if memory is None else [[(m.kv, m.z) for m in blocks] for blocks in memory]

    @staticmethod
    def restore(kept: Any, device: torch.device) -> Memory | None:
        return None if kept is None else [[TemporalMemory(kv.to(device), z.to(device)) for kv, z in blocks]
                                          for blocks in kept]


def iter_video(pipe: SamplingPipeline, portrait: Portrait, audio: AudioFeatures,
               opts: SamplingOptions) -> Iterator[torch.Tensor]:
    """Each clip's frames [f, H, W, 3] in order, as soon as they are decoded."""
    yield from iter_clip_video(pipe, portrait, audio, opts, MemoryConditions)
