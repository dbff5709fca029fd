"""The model prediction of one denoising step: guidance, the row groups it runs, and deep-feature reuse
(the Backbone keeps the reused features in a models.deep_cache.DeepFeatureCache)."""

from __future__ import annotations

import torch

from ..models import BackboneConditions
from ..models.deep_cache import DeepFeatureCache

# Low-VRAM mode: no attention call may need more score elements than this (256 Mi, 0.5 GiB in fp16).
LOW_VRAM_SCORE_BUDGET = 2**28


class Denoiser:
    """One clip's model prediction per step: guided or conditional rows only, batched or (low-VRAM)
    one item after the other, with or without reused deep features. Row subsets are selected
    once per clip, so their projection caches last the whole clip."""

    def __init__(self, unet: torch.nn.Module, cond: BackboneConditions, use_cfg: bool, guidance: float,
                 one_by_one: bool, deep_cache: DeepFeatureCache | None) -> None:
        self.unet, self.guidance, self.deep_cache = unet, guidance, deep_cache
        self._cond: BackboneConditions | None = None
        if one_by_one and cond.batch > 1:
            items = [cond.select([i]) for i in range(cond.batch)]
            self.groups = {True: items, False: items[-1:]}  # the last item is the conditional one
        elif use_cfg:
            self.groups = {True: [cond]}
            self._cond = cond  # its conditional item alone is selected at the first unguided step, if any
        else:
            self.groups = {True: [cond], False: [cond]}

    def _rows(self, guided: bool) -> list[BackboneConditions]:
        if guided not in self.groups:
            self.groups[guided] = [self._cond.select([self._cond.batch - 1])]
        return self.groups[guided]

    def __call__(self, latents: torch.Tensor, t: torch.Tensor, guided: bool, reuse: bool) -> torch.Tensor:
        if self.deep_cache is not None:
            self.deep_cache.reusing = reuse
        preds = [self.unet(latents.expand(group.batch, *latents.shape[1:]), t, group, self.deep_cache)
                 for group in self._rows(guided)]
        pred = preds[0] if len(preds) == 1 else torch.cat(preds)
        if not guided:
            return pred
        uncond, cond = pred.chunk(2)
        return uncond + self.guidance * (cond - uncond)
