"""Noise schedulers: DDIM as Hallo configures it, other diffusers samplers on the same betas, and for
rectified-flow models (MEMO) the flow-matching Euler sampler and the multistep solvers on flow sigmas."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

# name → diffusers' class, by its name: diffusers is imported when a scheduler is made, not to list them
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "flow_euler": "FlowMatchEulerDiscreteScheduler",
}
FLOW_ONLY = ("flow_euler",)
DDPM_ONLY = ("ddim", "euler")


def is_flow(settings: dict[str, Any]) -> bool:
    """Rectified-flow settings carry a `shift` (config.FLOW_SCHEDULER); DDPM ones carry betas."""
    return "shift" in settings


def default_scheduler(settings: dict[str, Any]) -> str:
    """The model's own sampler: DDIM for Hallo's family, flow-matching Euler for MEMO."""
    return "flow_euler" if is_flow(settings) else "ddim"


def check_scheduler(name: str, settings: dict[str, Any]) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    if is_flow(settings) and name in DDPM_ONLY:
        raise ValueError(f"This model is a rectified-flow model (MEMO): {name!r} samples DDPM models. Choose "
                         "flow_euler (its own), dpmpp_2m or unipc.")
    if not is_flow(settings) and name in FLOW_ONLY:
        raise ValueError(f"{name!r} samples rectified-flow models (MEMO); this model is a DDPM model. Choose ddim "
                         "(its own), dpmpp_2m, euler or unipc.")


def make_scheduler(name: str, settings: dict[str, Any]) -> SchedulerMixin:
    """A fresh scheduler (multistep ones keep state, so each clip gets its own)."""
    import diffusers
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler

    check_scheduler(name, settings)
    cls = getattr(diffusers, SCHEDULERS[name])
    if is_flow(settings):
        if cls is FlowMatchEulerDiscreteScheduler:
            return cls(**settings)
        # The solvers' flow mode: x0 = x - σ·v, with MEMO's timesteps (σ·1000) and an end at σ = 0.
        return cls(num_train_timesteps=settings["num_train_timesteps"], use_flow_sigmas=True,
                   flow_shift=settings["shift"], prediction_type="flow_prediction", final_sigmas_type="zero")
    base = DDIMScheduler(**settings)
    if cls is DDIMScheduler:
        return base
    extra = {}
    if settings.get("rescale_betas_zero_snr") and cls is not EulerDiscreteScheduler:
        # Zero terminal SNR makes the last sigma infinite; these samplers must end at sigma 0.
        extra["final_sigmas_type"] = "zero"
    return cls.from_config(base.config, **extra)
