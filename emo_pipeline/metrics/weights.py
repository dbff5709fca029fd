"""The metric networks' weight files (syncnet_python's syncnet_v2.model, sfd_face.pth): read weights-only, so no code
in them can run, and held to the network's own state dict key by key before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def read_strict_state(path: str | Path, network: type[nn.Module], title: str, expected_file: str,
                      optional: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The file's state dict, checked against `network()`'s (built on the meta device): every key there with its
    shape, nothing else; `optional` keys may be absent. Problems are named (`title`: the network's name)."""
    from ..io.loading import CheckpointError, unreadable_weights_error  # only when a file is read

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. Expected {expected_file}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files too: no mmap
    except Exception as err:  # refused pickle, cut-short or random bytes: said as it is
        raise unreadable_weights_error(path, err, expected_file) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                               for k, v in state.items()):
        raise CheckpointError(f"{path.name} is not a state dict of tensors. Expected {expected_file}.")
    with torch.device("meta"):
        expected = network().state_dict()
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(f"{k} {tuple(state[k].shape)} ({title} has {tuple(expected[k].shape)})"
                   for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} {len(keys)}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if keys]
        raise CheckpointError(f"{path.name} does not hold {title}'s weights ({'; '.join(parts)}). "
                              f"Expected {expected_file}.")
    return state
