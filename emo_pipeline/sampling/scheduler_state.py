"""A scheduler's own state (step index, multistep history, ...), kept by a resumable render after a denoising step
(render_state.py writes it) and put back on a fresh scheduler to continue exactly."""

from __future__ import annotations

from typing import Any

import torch


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A diffusers scheduler's own state (step index, multistep history, ...) as plain values and tensors."""
    state = {}
    for key, value in vars(scheduler).items():
        if key != "_internal_dict" and _plain(value):
            state[key] = value
    return state


def restore_scheduler(scheduler: Any, state: dict[str, Any], device: torch.device) -> None:
    """Put a `scheduler_state` back on a scheduler that has had set_timesteps; each tensor goes where the
    scheduler keeps it (some keep their sigmas on the CPU on purpose)."""
    for key, value in state.items():
        current = getattr(scheduler, key, None)
        where = current.device if isinstance(current, torch.Tensor) else device
        setattr(scheduler, key, _to_device(value, where))


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def _to_device(value: Any, device: torch.device | str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value
