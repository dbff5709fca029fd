"""`memory_mode: auto`: the memory mode and VAE decode chunk that fit the free device memory.

The peak of each mode is counted on fake tensors (emo_pipeline/cost.py: weights on the device plus
the largest stage of one clip, whatever the video's length), and the
first mode that fits with a margin is taken, in the order of speed: normal, low-VRAM, low-VRAM with
fp8 weights. The margin covers what the count leaves out: kernel workspaces, the CUDA context and the
allocator's fragmentation (a count is a model; only a device's allocator measures).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .config import EMOConfig
from .sampling.steps import Callbacks, SamplingOptions

if TYPE_CHECKING:
    from .pipeline import EMOPipeline

MODES = ("normal", "low_vram", "low_vram_fp8")
MARGIN = 0.15  # of the counted peak
RESERVE = 512 * 2**20  # bytes kept free besides
DECODE_CHUNKS = (8, 4, 2, 1)
GIB = 2**30


@dataclass(frozen=True)
class MemoryPlan:
    mode: str  # one of MODES
    decode_chunk: int
    counted: int  # the counted peak of this mode, bytes
    free: int  # the free memory it was fitted into, bytes
    reason: str

    @property
    def low_vram(self) -> bool:
        return self.mode != "normal"

    @property
    def fp8_weights(self) -> bool:
        return self.mode == "low_vram_fp8"


def needed(counted: int) -> int:
    """What a counted peak needs free: the count, the margin and the reserve."""
    return int(counted * (1 + MARGIN)) + RESERVE


_clips: dict[tuple, object] = {}  # counts take seconds at full size: once per model, settings and mode
_decodes: dict[tuple, int] = {}
_activations: dict[tuple, int] = {}


def memory_required(pipe: "EMOPipeline", options: SamplingOptions) -> int:
    """Bytes a render needs on the device besides the weights: the largest stage of one
    clip (ReferenceNet, a denoising step, a VAE decode chunk) for this pipeline's architecture, precision and
    memory mode and these (resolved) options, whatever the video's length (context-window models keep the whole
    video's latents in host memory). Counted on fake tensors, once per model and settings (a few seconds at full
    size)."""
    from .cost import clip_memory

    key = (pipe.config.to_json(), pipe.dtype, pipe.low_vram, options.steps, options.guidance_scale,
           options.frames_per_clip, options.motion_frames, options.guidance_interval, options.cache_interval,
           options.decode_chunk_size, options.preset)
    if key not in _activations:
        _activations[key] = clip_memory(pipe, options).activations
    return _activations[key]


def counted_peak(config: EMOConfig, options: SamplingOptions, dtype: torch.dtype, mode: str, decode_chunk: int) -> int:
    """Bytes one clip peaks at in `mode` (weights included; the same for any length of video), counted on fake
    tensors; the decode chunk only changes the VAE's stage, counted on its own."""
    from .cost import clip_memory, vae_decode_memory

    options = dataclasses.replace(options, callbacks=Callbacks())
    key = (config.to_json(), repr(options), dtype, mode)
    if key not in _clips:
        _clips[key] = clip_memory(config, options, dtype, low_vram=mode != "normal", fp8_weights=mode == "low_vram_fp8")
    clip = _clips[key]
    chunk = 1 if mode != "normal" else min(decode_chunk, options.frames_per_clip or decode_chunk)
    if (key[0], dtype, chunk) not in _decodes:
        _decodes[(key[0], dtype, chunk)] = vae_decode_memory(config, chunk, dtype)
    decode = _decodes[(key[0], dtype, chunk)]
    return clip.weights + max(clip.reference_net, clip.denoising, decode)


def plan_memory(config: EMOConfig, free: int, dtype: torch.dtype, options: SamplingOptions | None = None,
                modes: tuple[str, ...] = MODES) -> MemoryPlan:
    """The fastest of `modes` (and the largest decode chunk) whose counted peak fits in `free` bytes with the
    margin; the last mode when none fits, saying so."""
    options = options or SamplingOptions()
    wanted = options.decode_chunk_size or DECODE_CHUNKS[0]
    weights = weight_bytes(config, dtype)
    if modes[0] == "normal" and weights * FAR_BELOW < free:
        # peaks are 1.6-2.8x the weights at full size (Hallo, MEMO): no need to spend seconds counting
        return MemoryPlan("normal", wanted, 0, free, f"auto: normal: the weights ({_gib(weights)}) are under a "
                          f"tenth of the {_gib(free)} free")
    counted = {}
    for mode in modes:
        # low-VRAM mode decodes frame by frame whatever the chunk; in normal mode a smaller chunk may fit
        chunks = [c for c in DECODE_CHUNKS if c <= wanted] if mode == "normal" else [1]
        for chunk in chunks or [1]:
            counted[mode] = peak = counted_peak(config, options, dtype, mode, chunk)
            if needed(peak) <= free:
                return MemoryPlan(mode, chunk, peak, free, _reason(mode, chunk, peak, free, counted))
    mode = modes[-1]
    return MemoryPlan(mode, 1, counted[mode], free,
                      f"auto: {_label(mode)}, though its counted peak {_gib(counted[mode])} (+{MARGIN:.0%} margin) "
                      f"exceeds the {_gib(free)} free; it may run out of memory: free memory, or use a shorter clip")


FAR_BELOW = 10


def weight_bytes(config: EMOConfig, dtype: torch.dtype) -> int:
    """The network's weights in `dtype`, from its config's shapes (nothing is built)."""
    from .io.loading import expected_shapes

    itemsize = torch.empty(0, dtype=dtype).element_size()
    return sum(torch.Size(s).numel() for s in expected_shapes(config).values()) * itemsize


def _label(mode: str) -> str:
    return {"normal": "normal", "low_vram": "low-VRAM", "low_vram_fp8": "low-VRAM with fp8 weights"}[mode]


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 2**20:.0f} MiB"


def _reason(mode: str, chunk: int, peak: int, free: int, counted: dict[str, int]) -> str:
    tried = [f"{_label(m)} needs {_gib(needed(c))}" for m, c in counted.items() if m != mode]
    why = f" ({'; '.join(tried)})" if tried else ""
    decode = f", VAE decode {chunk} frame{'s' if chunk > 1 else ''} at a time" if mode == "normal" else ""
    return (f"auto: {_label(mode)}{decode}: counted peak {_gib(peak)} +{MARGIN:.0%} margin fits in {_gib(free)} "
            f"free{why}")


def plan_for_network(network: str | Path | None, device: torch.device, free: int, dtype: torch.dtype | None,
                     options: SamplingOptions | None = None) -> MemoryPlan:
    """`plan_memory` for the network file or model folder `network` (its config read from the file, no weights
    loaded; None: the tiny random-weight model) on `device`; `dtype` None: the family's own there."""
    from .components import default_dtype
    from .config import tiny_config
    from .io.loading import network_config
    from .io.model_files import find_net

    config = tiny_config() if network is None else network_config(find_net(Path(network)))
    return plan_memory(config, free, dtype or default_dtype(config, device), options)


def free_memory(device: torch.device | str) -> int:
    """Free bytes on the device: CUDA's own figure, else the RAM available to the process."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)
