"""Reading and writing EMO network checkpoints, with strict key checks and readable errors.

Accepted network files: Hallo/Hallo2 `net.pth` as downloaded (a pickled state dict, read with
`weights_only=True` so no code inside it can run) and our `.safetensors` form, which carries its
EMOConfig as JSON in the file's metadata.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import EMOConfig, hallo_config
from .models import EMONet

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
CONFIG_METADATA_KEY = "emo_config"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with what is wrong and what to do."""


@dataclass
class KeyReport:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def describe(self, first: int = 5) -> str:
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:first]) + (", ..." if len(items) > first else "")
                parts.append(f"{len(items)} {label} key(s): {shown}")
        if self.wrong_shape:
            shown = ", ".join(f"{k} {tuple(got)} (expected {tuple(exp)})" for k, got, exp in self.wrong_shape[:first])
            parts.append(f"{len(self.wrong_shape)} tensor(s) of the wrong shape: {shown}")
        return "; ".join(parts) if parts else "all keys match"


def compare_keys(expected: dict[str, torch.Size], found: dict[str, torch.Size]) -> KeyReport:
    return KeyReport(
        missing=sorted(set(expected) - set(found)),
        unexpected=sorted(set(found) - set(expected)),
        wrong_shape=[(k, found[k], expected[k]) for k in sorted(set(expected) & set(found))
                     if tuple(found[k]) != tuple(expected[k])],
    )


def expected_shapes(config: EMOConfig) -> dict[str, torch.Size]:
    """The state-dict layout of a config, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        net = EMONet(config)
    return {k: v.shape for k, v in net.state_dict().items()}


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a network file. Pickles are opened with weights_only and mmap."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                return {k: f.get_tensor(k) for k in f.keys()}, metadata
        if path.suffix in PICKLE_SUFFIXES:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise CheckpointError(f"{path.name} is not a state dict of tensors.")
            return state, {}
    except CheckpointError:
        raise
    except Exception as err:  # truncated, corrupt or unsafe files all end here
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch pickle"
        raise CheckpointError(
            f"Cannot read {path} as a {kind} file ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
            "The file may be incomplete or damaged: download it again. Pickled files are opened with "
            "weights_only=True, so files that carry code are refused."
        ) from None
    raise CheckpointError(f"{path.name}: unknown checkpoint type; use .safetensors or .pth.")


def config_for(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> EMOConfig:
    """The config stored in the file, else the Hallo configuration when the keys match it."""
    if CONFIG_METADATA_KEY in metadata:
        try:
            return EMOConfig.from_json(metadata[CONFIG_METADATA_KEY])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path.name} carries an unreadable EMO config: {err}") from None
    config = hallo_config()
    report = compare_keys(expected_shapes(config), {k: v.shape for k, v in state.items()})
    if report.ok:
        return config
    raise CheckpointError(
        f"{path.name} is not a Hallo/Hallo2 net.pth nor one of our EMO safetensors files: {report.describe()}."
    )


def load_net(path: str | Path, config: EMOConfig | None = None, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> EMONet:
    """Build the network for a checkpoint and load it strictly."""
    path = Path(path)
    state, metadata = read_state_dict(path)
    config = config or config_for(state, metadata, path)
    report = compare_keys(expected_shapes(config), {k: v.shape for k, v in state.items()})
    if not report.ok:
        raise CheckpointError(f"{path.name} does not fit the '{config.name}' model: {report.describe()}.")
    with torch.device("meta"):
        net = EMONet(config)
    net.load_state_dict(state, strict=True, assign=True)
    return net.to(device=device, dtype=dtype)


def save_net(net: EMONet, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write a single .safetensors file holding the network and its config."""
    path = Path(path)
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
             for k, v in net.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(state, str(tmp), metadata={CONFIG_METADATA_KEY: net.config.to_json(), "format": "emo-net"})
    tmp.replace(path)
    return path


def describe_checkpoint(path: str | Path) -> str:
    """What a network file is, what it holds and what it lacks, for `python -m emo_pipeline inspect`."""
    path = Path(path)
    state, metadata = read_state_dict(path)
    params = sum(v.numel() for v in state.values())
    dtypes = Counter(str(v.dtype).replace("torch.", "") for v in state.values())
    prefixes = Counter(k.split(".", 1)[0] for k in state)
    lines = [
        f"file: {path} ({path.stat().st_size / 2**20:.1f} MiB, "
        f"{'safetensors' if path.suffix == '.safetensors' else 'pickle'})",
        f"tensors: {len(state)}, parameters: {params / 1e6:.2f} M, dtypes: "
        + ", ".join(f"{k} ×{n}" for k, n in dtypes.most_common()),
        "parts: " + ", ".join(f"{k} ({n})" for k, n in sorted(prefixes.items())),
    ]
    try:
        config = config_for(state, metadata, path)
    except CheckpointError as err:
        lines.append(f"family: unknown — {err}")
        return "\n".join(lines)
    family = "EMO safetensors (config in metadata)" if CONFIG_METADATA_KEY in metadata else "Hallo / Hallo2 net.pth"
    report = compare_keys(expected_shapes(config), {k: v.shape for k, v in state.items()})
    lines += [
        f"family: {family}; config '{config.name}'",
        f"  clip {config.frames_per_clip} frames, {config.motion_frames} motion frames, first clip motion: "
        f"{config.first_clip_motion}, audio attention: {config.audio_attention}, "
        f"speed layers: {'yes' if config.has_speed_layers else 'no'}, size {config.sample_size}px",
        f"keys: {report.describe()}",
    ]
    return "\n".join(lines)

