"""What the reference harnesses of both families share (hallo_side_by_side.py, echomimic_reference.py).

SD15_UNET_CONFIG: the Stable Diffusion 1.5 UNet config (unet/config.json) that the reference code of
both families starts from: Hallo's UNets (SD1.5) and EchoMimic's (sd-image-variations-diffusers,
the same layout with cross-attention width 768). Not available offline, so it is written out
here; their 3-D UNets switch the block types (see each script).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SD15_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": False,
    "use_linear_projection": False,
}


@contextmanager
def quiet() -> Iterator[None]:
    """Hides the notices the reference code gets from today's libraries (deprecated diffusers
    arguments and layers, config keys its classes do not take, torch.utils.checkpoint without
    `use_reentrant`); none of them changes a result."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        diffusers_logging.set_verbosity(level)


def install_xformers_stand_in() -> None:
    """Empty `xformers` and `xformers.ops` modules, for reference code that imports xformers at import
    time but runs without it on this path."""
    import importlib.machinery
    import importlib.util
    import sys
    import types

    import diffusers.utils.import_utils  # noqa: F401  (decides "no xformers" before the stand-in exists)

    if "xformers" in sys.modules or importlib.util.find_spec("xformers") is not None:
        return  # the stand-in is there already, or the real xformers is installed
    package = types.ModuleType("xformers")
    package.__spec__ = importlib.machinery.ModuleSpec("xformers", None, is_package=True)
    package.__path__ = []
    ops = types.ModuleType("xformers.ops")
    ops.__spec__ = importlib.machinery.ModuleSpec("xformers.ops", None)
    package.ops = ops
    sys.modules.update({"xformers": package, "xformers.ops": ops})


def checkout_path(path, variable: str, marker: str, repository: str) -> Path:
    """`path`, else the environment variable `variable`, checked to be a checkout (it holds `marker`)."""
    import os

    path = path or os.environ.get(variable)
    if not path:
        raise RuntimeError(f"{variable} is not set: set it to a checkout of {repository}.")
    path = Path(path).resolve()
    if not (path / marker).is_file():
        raise RuntimeError(f"{path} is not a {repository} checkout (no {marker} in it).")
    return path


def shape_text(tensor) -> str:
    return ",".join(str(d) for d in tensor.shape)


def relative(ours, theirs) -> tuple[float, float]:
    """max |ours - theirs| and that over max |theirs|, in float32."""
    diff = (ours.float() - theirs.float()).abs().max().item()
    return diff, diff / theirs.float().abs().max().item()


def network_rows(name: str, net) -> tuple[list[tuple[str, str, str]], str, dict, set]:
    """A network's key-list rows (network, key, shape), its count line, its state dict and the names of
    its persistent buffers."""
    state = net.state_dict()
    buffers = {key for key, _ in net.named_buffers()} & set(state)
    total = sum(v.numel() for v in state.values())
    n_buffers = sum(state[k].numel() for k in buffers)
    line = (f"# {name}: {len(state)} tensors, {total:,} values ({len(state) - len(buffers)} parameters with "
            f"{total - n_buffers:,} values, {len(buffers)} buffers with {n_buffers:,} values)")
    return [(name, key, shape_text(value)) for key, value in state.items()], line, state, buffers


def write_key_list(output: Path, header: list[str], rows: list[tuple[str, str, str]], summary: list[str],
                   root: Path) -> None:
    """A key-list TSV (network, key, shape) under its `#` header lines, and the counts printed."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(header) + "\n")
        f.writelines(f"{n}\t{k}\t{s}\n" for n, k, s in rows)
    print(f"wrote {output.relative_to(root)}: {len(rows)} keys")
    print("\n".join(summary))
