"""Noise schedulers: DDIM as Hallo configures it, and other diffusers samplers on the same betas."""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

SCHEDULERS = {
    "ddim": DDIMScheduler,
    "dpmpp_2m": DPMSolverMultistepScheduler,
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


def make_scheduler(name: str, settings: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler (multistep ones keep state, so each clip gets its own)."""
    try:
        cls = SCHEDULERS[name]
    except KeyError:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}") from None
    base = DDIMScheduler(**settings)
    if cls is DDIMScheduler:
        return base
    extra = {}
    if settings.get("rescale_betas_zero_snr") and cls is not EulerDiscreteScheduler:
        # Zero terminal SNR makes the last sigma infinite; these samplers must end at sigma 0.
        extra["final_sigmas_type"] = "zero"
    return cls.from_config(base.config, **extra)
