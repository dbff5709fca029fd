"""Each model's own sampling defaults for `generate --help`, taken from the configs (config.py's presets, and the
bundled demo model's config as its file carries it) so that the help never drifts from what a render does.
Without torch: --help answers at once."""

from __future__ import annotations

import functools
import json
import struct
from pathlib import Path

from ..config import PRESETS, EMOConfig
from ..families import FAMILIES
from ..sampling.schedulers import default_scheduler

CONFIG_METADATA_KEY = "emo_config"  # io/loading.py's key (that module loads torch)
MAX_HEADER_BYTES = 16 * 2**20  # a safetensors header is a few hundred kB at most


def models_with_defaults(demo: Path | None) -> list[tuple[str, EMOConfig]]:
    """(label, config) for the bundled demo model (when its file is there) and every full-size preset."""
    rows = []
    demo_config = _file_config(demo) if demo is not None else None
    if demo_config is not None:
        rows.append(("demo (default)", demo_config))
    rows += [(name, make()) for name, make in PRESETS.items() if not name.startswith("tiny")]
    return rows


@functools.lru_cache(maxsize=4)
def _file_config(path: Path) -> EMOConfig | None:
    """The config a .safetensors network carries in its metadata, read from the header alone (None: none)."""
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > MAX_HEADER_BYTES:
                return None
            metadata = json.loads(file.read(length)).get("__metadata__") or {}
        return EMOConfig.from_json(metadata[CONFIG_METADATA_KEY])
    except (OSError, struct.error, ValueError, KeyError, TypeError):
        return None


def defaults_table(demo: Path | None) -> str:
    """The help's table: one line per model, each column the default of a generate option."""
    header = ("model", "steps", "cfg", "scheduler", "clip", "motion", "fps", "size")
    lines = [header]
    for label, config in models_with_defaults(demo):
        windows = config.spec.sampling == "context_windows"
        clip = f"{config.frames_per_clip} (window)" if windows else str(config.frames_per_clip)
        lines.append((label, str(config.steps), f"{config.guidance_scale:g}", default_scheduler(config.scheduler),
                      clip, str(config.motion_frames), f"{config.fps:g}", f"{config.sample_size}²"))
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in lines)


def defaults_epilog(demo: Path | None) -> str:
    echomimic = FAMILIES["echomimic"]
    return (
        "Each model's own sampling, what the options default to without --preset (a preset sets the scheduler and "
        "the steps): steps --steps, cfg --cfg, scheduler --scheduler, clip --frames-per-clip, motion "
        "--motion-frames, fps --fps, size the square frame in pixels. The progress line says `clip C/N  step S/T`: "
        "N clips of --frames-per-clip frames and T = N × --steps; EchoMimic's says `step S/--steps  window W/N`: "
        "each of its steps runs every context window of --frames-per-clip frames, neighbours sharing "
        f"--context-overlap frames ({echomimic.context_overlap}).\n\n"
        + defaults_table(demo))
