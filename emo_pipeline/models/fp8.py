"""fp8 weight storage: the network's linear and conv weights kept in float8 (e4m3fn), up-cast one
layer at a time when it runs, as ComfyUI offers for diffusion models.

Each weight is stored divided by a per-tensor scale (its largest magnitude over 448, e4m3fn's
largest finite value), so small weights keep their three mantissa bits instead of falling
into fp8's subnormal range. Storage halves (full-size Hallo network: 4.9 GB → 2.4 GB);
compute stays in the pipeline's precision. Inference only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


class _Fp8Weight:
    """Mixed into nn.Linear / nn.Conv2d: `weight` holds fp8 values, `weight_scale` their scale."""

    weight: torch.Tensor
    weight_scale: torch.Tensor

    def compute_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # The float32 scale is not cast to `dtype` first: mul computes fp16/bf16 in float32 and a 0-dim
        # tensor keeps the result in `dtype`, so each weight is rounded once, as compiled code (which
        # fuses the product in float32) rounds it. Rounding the scale first scaled every weight of a
        # layer by the same error (up to 2^-11 in fp16, 2^-9 in bf16, far more for a scale under fp16's
        # smallest normal 6.1e-5, that is a layer whose weights are all under 0.027).
        return self.weight.to(dtype) * self.weight_scale


class Fp8Linear(_Fp8Weight, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.compute_weight(x.dtype), self.bias)


class Fp8Conv2d(_Fp8Weight, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.compute_weight(x.dtype), self.bias)


_FP8_CLASSES = {nn.Linear: Fp8Linear, nn.Conv2d: Fp8Conv2d}


def store_weights_fp8(module: nn.Module) -> nn.Module:
    """Convert every nn.Linear / nn.Conv2d weight of `module` to scaled fp8, in place (one layer at
    a time, so memory never holds two full copies). Biases and norms keep their precision."""
    for layer in module.modules():
        cls = _FP8_CLASSES.get(type(layer))
        if cls is None:
            continue
        weight = layer.weight.detach()
        scale = (weight.abs().amax().float() / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
        layer.weight = nn.Parameter((weight.float() / scale).to(FP8), requires_grad=False)
        layer.register_buffer("weight_scale", scale, persistent=False)
        layer.__class__ = cls
    return module


def compute_weight(layer: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """The weight a layer computes with, in `dtype`, whether it is stored in fp8 or not."""
    if isinstance(layer, _Fp8Weight):
        return layer.compute_weight(dtype)
    return layer.weight.to(dtype)


def has_fp8_weights(module: nn.Module) -> bool:
    return any(isinstance(layer, _Fp8Weight) for layer in module.modules())


def move(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Module.to(device, dtype), except that fp8-stored weights and their scales keep their type;
    a module already there is left untouched."""
    keep = {id(layer.weight_scale) for layer in module.modules() if isinstance(layer, _Fp8Weight)}

    def target(t: torch.Tensor) -> torch.dtype | None:
        return dtype if t.is_floating_point() and t.dtype != FP8 and id(t) not in keep else None

    tensors = [*module.parameters(), *module.buffers()]
    if all(t.device == device and target(t) in (None, t.dtype) for t in tensors):
        return module
    return module._apply(lambda t: t.to(device=device, dtype=target(t)))
