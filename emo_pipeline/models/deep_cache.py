"""Deep-feature reuse across neighbouring denoising steps (DeepCache, Ma et al., CVPR 2024).

Between close steps the Backbone's low-resolution features change little, while the top
(highest-resolution) level still follows the latents closely. On a full step the input of the
top up-block is kept per batch item; on a reuse step only the top down-block and the top
up-block run, fed with the kept features. This is an approximation: it is an opt-in fast mode.
"""

from __future__ import annotations

import torch


class DeepFeatureCache:
    """The top up-block's input per batch item ([F, C, H, W] each), from the last full step."""

    def __init__(self) -> None:
        self.features: dict[int, torch.Tensor] = {}
        self.audio: dict[int, torch.Tensor] = {}  # MEMO: the audio tokens as the skipped blocks left them
        self.reusing = False  # set by the sampler for the steps that reuse

    def get(self, items: tuple[int, ...]) -> torch.Tensor | None:
        """The kept features of these items as one batch, or None when any item has none."""
        return _batch(self.features, items)

    def get_audio(self, items: tuple[int, ...]) -> torch.Tensor | None:
        return _batch(self.audio, items)

    def put(self, items: tuple[int, ...], features: torch.Tensor, audio: torch.Tensor | None = None) -> None:
        for i, part in zip(items, features.chunk(len(items))):
            self.features[i] = part
        if audio is not None:
            for i, part in zip(items, audio.chunk(len(items))):
                self.audio[i] = part


def _batch(kept: dict[int, torch.Tensor], items: tuple[int, ...]) -> torch.Tensor | None:
    if not all(i in kept for i in items):
        return None
    parts = [kept[i] for i in items]
    return parts[0] if len(parts) == 1 else torch.cat(parts)
